# creed filter stage image: runs `python -m jobs.filter --config FILE_OR_URI`.
#   docker build -f images/filter.Dockerfile --build-arg BASE_IMAGE=ghcr.io/creed/creed-base-cpu:TAG \
#     --build-arg CREED_GIT_COMMIT=$(git rev-parse HEAD) -t ghcr.io/creed/creed-filter:TAG .
# images/build.sh does this, and passes the optional CA secret and local wheel folder (images/README.md).
ARG BASE_IMAGE=ghcr.io/creed/creed-base-cpu:0.1.0
# Wheels pip takes first (`images/build.sh WHEELS=DIR`: the build context `wheels`, or an image of the
# folder where the docker client has no buildx); empty by default.
ARG WHEELS_IMAGE=scratch
FROM ${WHEELS_IMAGE} AS wheels

FROM ${BASE_IMAGE}
COPY --chown=1000:1000 pyproject.toml README.md /opt/creed/
COPY --chown=1000:1000 jobs /opt/creed/jobs
COPY --chown=1000:1000 workflows /opt/creed/workflows
RUN --mount=type=secret,id=ca,uid=1000 --mount=type=secret,id=pipconf,uid=1000 \
    --mount=type=bind,from=wheels,target=/opt/wheels \
    if [ -f /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi; \
    if [ -f /run/secrets/pipconf ]; then export PIP_CONFIG_FILE=/run/secrets/pipconf; fi; \
    pip install --no-cache-dir --find-links /opt/wheels "/opt/creed[filter]"

# Recorded in every manifest as the code version (jobs/common/manifest.py).
ARG CREED_GIT_COMMIT=unknown
ENV CREED_GIT_COMMIT=${CREED_GIT_COMMIT}

ENTRYPOINT ["python", "-m", "jobs.filter"]
CMD ["--help"]
