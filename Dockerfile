# ebb's image: the release `ebb` binary on distroless/cc (glibc, libgcc, CA certificates), as nonroot.
# tests/env/images.sh assembles the same layout without a Docker daemon (tests/env/mkimage.py): the same
# binary path, user and entrypoint.
FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# .git is not in the build context: pass the commit for ebb_build_info, e.g.
# `docker build --build-arg EBB_GIT_COMMIT=$(git rev-parse HEAD) .` (else it reads "unknown").
ARG EBB_GIT_COMMIT=
RUN EBB_GIT_COMMIT=$EBB_GIT_COMMIT cargo build --release --locked -p ebb-operator --bin ebb && cp target/release/ebb /ebb

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /ebb /usr/local/bin/ebb
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/ebb"]
