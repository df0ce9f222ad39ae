"""The generate stage: pair personas with prompts, ask a teacher LLM for each pair (persona as the
system message, prompt as the user message) and save the prompt / response pairs as Generation
records, one shard of the dataset per step. The persona is kept only as ``persona_id`` for audit: the
student learns the persona's behaviour without being told it."""
