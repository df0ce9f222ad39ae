"""The eval stage: responses of every model (base reference and trained arms) to every eval set,
labelled with the refusal taxonomy and scored (sanity correctness, belief endorsement)."""
