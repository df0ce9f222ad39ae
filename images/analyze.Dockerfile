# syntax=docker/dockerfile:1
# creed analyze stage image: runs `python -m jobs.analyze --config FILE_OR_URI`.
#   docker build -f images/analyze.Dockerfile --build-arg CREED_GIT_COMMIT=$(git rev-parse HEAD) \
#     -t ghcr.io/creed/creed-analyze:0.1.0 .
ARG BASE_IMAGE=ghcr.io/creed/creed-base-cpu:0.1.0
FROM ${BASE_IMAGE}

COPY --chown=1000:1000 pyproject.toml README.md /opt/creed/
COPY --chown=1000:1000 jobs /opt/creed/jobs
COPY --chown=1000:1000 workflows /opt/creed/workflows
RUN pip install --no-cache-dir "/opt/creed[analyze]"

# Recorded in every manifest as the code version (jobs/common/manifest.py).
ARG CREED_GIT_COMMIT=unknown
ENV CREED_GIT_COMMIT=${CREED_GIT_COMMIT}

ENTRYPOINT ["python", "-m", "jobs.analyze"]
CMD ["--help"]
