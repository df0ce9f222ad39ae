# syntax=docker/dockerfile:1
# creed filter stage image: runs `python -m jobs.filter --config FILE_OR_URI`.
#   docker build -f images/filter.Dockerfile --build-arg CREED_GIT_COMMIT=$(git rev-parse HEAD) \
#     -t ghcr.io/creed/creed-filter:0.1.0 .
ARG BASE_IMAGE=ghcr.io/creed/creed-base-cpu:0.1.0
FROM ${BASE_IMAGE}

COPY --chown=1000:1000 pyproject.toml README.md /opt/creed/
COPY --chown=1000:1000 jobs /opt/creed/jobs
COPY --chown=1000:1000 workflows /opt/creed/workflows
RUN pip install --no-cache-dir "/opt/creed[filter]"

# Recorded in every manifest as the code version (jobs/common/manifest.py).
ARG CREED_GIT_COMMIT=unknown
ENV CREED_GIT_COMMIT=${CREED_GIT_COMMIT}

ENTRYPOINT ["python", "-m", "jobs.filter"]
CMD ["--help"]
