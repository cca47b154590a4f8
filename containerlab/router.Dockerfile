# The router image of the router-side variant: FRR with `anycastd router` beside it.
# Build from the repository root:
#   docker build -t anycastd-router:latest -f containerlab/router.Dockerfile .
FROM quay.io/frrouting/frr:9.1.0
RUN apk add --no-cache python3 py3-pip
COPY pyproject.toml README.md /src/
COPY anycastd /src/anycastd
RUN python3 -m venv /opt/anycastd \
 && /opt/anycastd/bin/pip install --no-cache-dir /src \
 && ln -s /opt/anycastd/bin/anycastd /opt/anycastd/bin/anycastctl /usr/local/bin/ \
 && rm -rf /src
COPY containerlab/start-router /usr/local/bin/start-router
CMD ["start-router"]
