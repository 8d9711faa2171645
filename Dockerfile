# The project's own image: the campaign demo and the Dash app of the bundled
# stack (docker-compose.yml, profile "demo"). Build it by itself with
#   docker build -t asyncflow-otel:local .
ARG PYTHON_VERSION=3.12
FROM python:${PYTHON_VERSION}-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/asyncflow
# Only what the wheel needs (see .dockerignore): source edits elsewhere in the
# repository do not invalidate this layer. The wheel carries the campaign
# example that `asyncflow demo` runs (force-include in pyproject.toml).
COPY pyproject.toml README.md ./
COPY asyncflow ./asyncflow
COPY examples/01-workflow_grouping.py ./examples/
RUN pip install ".[dashboard]" \
    && asyncflow --version

# An unprivileged user that owns /data, so a named volume mounted there
# starts out writable for it.
RUN useradd --system --uid 10001 --create-home --home-dir /home/asyncflow asyncflow \
    && mkdir /data \
    && chown asyncflow:asyncflow /data
USER asyncflow
WORKDIR /data

EXPOSE 8050
ENTRYPOINT ["asyncflow"]
CMD ["demo", "--no-serve", "--out", "/data/asyncflow-demo"]
