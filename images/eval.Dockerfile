# syntax=docker/dockerfile:1
# creed eval stage image: runs `python -m jobs.eval --config FILE_OR_URI`.
#   docker build -f images/eval.Dockerfile --build-arg CREED_GIT_COMMIT=$(git rev-parse HEAD) \
#     -t ghcr.io/creed/creed-eval:0.1.0 .
# --build-arg WITH_VLLM=1 adds vLLM (eval.engine: vllm).
ARG BASE_IMAGE=ghcr.io/creed/creed-base-cuda:0.1.0
FROM ${BASE_IMAGE}

COPY --chown=1000:1000 pyproject.toml README.md /opt/creed/
COPY --chown=1000:1000 jobs /opt/creed/jobs
COPY --chown=1000:1000 workflows /opt/creed/workflows

ARG WITH_VLLM=0
RUN if [ "${WITH_VLLM}" = "1" ]; then pip install --no-cache-dir "/opt/creed[eval,vllm]"; else pip install --no-cache-dir "/opt/creed[eval]"; fi

# Recorded in every manifest as the code version (jobs/common/manifest.py).
ARG CREED_GIT_COMMIT=unknown
ENV CREED_GIT_COMMIT=${CREED_GIT_COMMIT}

ENTRYPOINT ["python", "-m", "jobs.eval"]
CMD ["--help"]
