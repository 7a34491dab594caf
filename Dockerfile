# syntax=docker/dockerfile:1
#
# One small image per service binary. Pick the service with --target:
#
#   docker buildx build --target delivery -t REGISTRY/fabrikam-delivery:0.1.0-<revision> .
#
# scripts/build-images.sh builds every service (or one) with the tags (crate version + git
# revision, never `latest`) and the OCI labels filled in. The build step is
# scripts/build-service.sh, the same script CI runs natively (`cargo build --release --locked
# -p SERVICE`, then a debug-stripped copy), so an image holds the binary CI tested.
#
# Runtime: distroless cc (glibc, libgcc, CA certificates, no shell, no package manager) as the
# unprivileged user 65532; the binary writes nothing to its filesystem, so the container runs
# with a read-only root filesystem. No HEALTHCHECK: Kubernetes probes /healthz/live and
# /healthz/ready (compose has no probe for these images either; the services wait for their
# servers by themselves).

ARG RUST_IMAGE=rust:1.95-slim-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

# ---- build: compiled dependencies and target/ live in BuildKit cache mounts across builds ----
FROM ${RUST_IMAGE} AS build-base
WORKDIR /src
COPY . .

FROM build-base AS build-gateway
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    scripts/build-service.sh gateway /out

FROM build-base AS build-ingestion
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    scripts/build-service.sh ingestion /out

FROM build-base AS build-workflow
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    scripts/build-service.sh workflow /out

FROM build-base AS build-package
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    scripts/build-service.sh package /out

FROM build-base AS build-dronescheduler
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    scripts/build-service.sh dronescheduler /out

FROM build-base AS build-delivery
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    scripts/build-service.sh delivery /out

FROM build-base AS build-deliveryhistory
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    scripts/build-service.sh deliveryhistory /out

FROM build-base AS build-account
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    scripts/build-service.sh account /out

# ---- runtime: what every service image shares ----
FROM ${RUNTIME_IMAGE} AS runtime
ARG VERSION=0.0.0-unset
ARG REVISION=unset
ARG SOURCE=https://example.invalid/fabrikam-drone-delivery
ARG CREATED=1970-01-01T00:00:00Z
LABEL org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.vendor="Fabrikam Drone Delivery"
USER 65532:65532
WORKDIR /

# ---- one stage per service binary: docker buildx build --target SERVICE ----
# (the workflow crate has two: fabrikam-workflow and fabrikam-supervisor)
FROM runtime AS gateway
LABEL org.opencontainers.image.title="fabrikam-gateway" \
      org.opencontainers.image.description="Fabrikam gateway: the public entry point"
COPY --from=build-gateway /out/fabrikam-gateway /usr/local/bin/fabrikam-gateway
ENV FABRIKAM_GATEWAY_LISTEN=0.0.0.0:8080
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/fabrikam-gateway"]

FROM runtime AS ingestion
LABEL org.opencontainers.image.title="fabrikam-ingestion" \
      org.opencontainers.image.description="Fabrikam ingestion: validates and durably queues delivery requests"
COPY --from=build-ingestion /out/fabrikam-ingestion /usr/local/bin/fabrikam-ingestion
ENV FABRIKAM_INGESTION_LISTEN=0.0.0.0:8081
EXPOSE 8081
ENTRYPOINT ["/usr/local/bin/fabrikam-ingestion"]

FROM runtime AS workflow
LABEL org.opencontainers.image.title="fabrikam-workflow" \
      org.opencontainers.image.description="Fabrikam workflow: drives package, drone and delivery from the queue"
COPY --from=build-workflow /out/fabrikam-workflow /usr/local/bin/fabrikam-workflow
ENV FABRIKAM_WORKFLOW_LISTEN=0.0.0.0:8085
EXPOSE 8085
ENTRYPOINT ["/usr/local/bin/fabrikam-workflow"]

FROM runtime AS supervisor
LABEL org.opencontainers.image.title="fabrikam-supervisor" \
      org.opencontainers.image.description="Fabrikam workflow supervisor: gives up overdue deliveries and compensates"
COPY --from=build-workflow /out/fabrikam-supervisor /usr/local/bin/fabrikam-supervisor
ENV FABRIKAM_SUPERVISOR_LISTEN=0.0.0.0:8086
EXPOSE 8086
ENTRYPOINT ["/usr/local/bin/fabrikam-supervisor"]

FROM runtime AS package
LABEL org.opencontainers.image.title="fabrikam-package" \
      org.opencontainers.image.description="Fabrikam package service"
COPY --from=build-package /out/fabrikam-package /usr/local/bin/fabrikam-package
ENV FABRIKAM_PACKAGE_LISTEN=0.0.0.0:8083
EXPOSE 8083
ENTRYPOINT ["/usr/local/bin/fabrikam-package"]

FROM runtime AS dronescheduler
LABEL org.opencontainers.image.title="fabrikam-dronescheduler" \
      org.opencontainers.image.description="Fabrikam drone scheduler: the fleet and drone assignment"
COPY --from=build-dronescheduler /out/fabrikam-dronescheduler /usr/local/bin/fabrikam-dronescheduler
ENV FABRIKAM_DRONESCHEDULER_LISTEN=0.0.0.0:8084
EXPOSE 8084
ENTRYPOINT ["/usr/local/bin/fabrikam-dronescheduler"]

FROM runtime AS delivery
LABEL org.opencontainers.image.title="fabrikam-delivery" \
      org.opencontainers.image.description="Fabrikam delivery service: deliveries, status and tracking"
COPY --from=build-delivery /out/fabrikam-delivery /usr/local/bin/fabrikam-delivery
ENV FABRIKAM_DELIVERY_LISTEN=0.0.0.0:8082
EXPOSE 8082
ENTRYPOINT ["/usr/local/bin/fabrikam-delivery"]

FROM runtime AS deliveryhistory
LABEL org.opencontainers.image.title="fabrikam-deliveryhistory" \
      org.opencontainers.image.description="Fabrikam delivery history: every finished delivery, fed by the delivery-events stream"
COPY --from=build-deliveryhistory /out/fabrikam-deliveryhistory /usr/local/bin/fabrikam-deliveryhistory
ENV FABRIKAM_DELIVERYHISTORY_LISTEN=0.0.0.0:8087
EXPOSE 8087
ENTRYPOINT ["/usr/local/bin/fabrikam-deliveryhistory"]

FROM runtime AS account
LABEL org.opencontainers.image.title="fabrikam-account" \
      org.opencontainers.image.description="Fabrikam account service: accounts, users, API keys and the admin API"
COPY --from=build-account /out/fabrikam-account /usr/local/bin/fabrikam-account
ENV FABRIKAM_ACCOUNT_LISTEN=0.0.0.0:8088
EXPOSE 8088
ENTRYPOINT ["/usr/local/bin/fabrikam-account"]
