#!/usr/bin/env bash
# Builds the images the test node runs, as OCI archives (tests/env/mkimage.py, no registry or Docker
# daemon), and imports them into the node's containerd when it runs:
#   ebb.test/ebb:dev             the release `ebb` binary as the Dockerfile lays it out
#                                (/usr/local/bin/ebb, user 65532, ENTRYPOINT ["/usr/local/bin/ebb"])
#   ebb.test/kafka-consumer:dev  tests/src/bin/kafka-consumer.rs, a real rdkafka consumer
# usage: tests/env/images.sh [--no-build] [ebb] [kafka-consumer]   (default: both; archives in target/images/)
# Pods use them with `imagePullPolicy: Never`.
set -euo pipefail
COMPONENT=images
. "$(dirname "$0")/lib.sh"
cd "$TE_DIR/../.."
TARGET=${CARGO_TARGET_DIR:-target}
OUT=$TARGET/images
EBB_IMAGE=ebb.test/ebb:dev
CONSUMER_IMAGE=ebb.test/kafka-consumer:dev

build=1
if [ "${1:-}" = --no-build ]; then build=0; shift; fi
wanted=${*:-ebb kafka-consumer}
mkdir -p "$OUT"
archives=()
for image in $wanted; do
  t0=$(now)
  case $image in
    ebb)
      [ $build = 0 ] || cargo build -q --release -p ebb-operator --bin ebb
      python3 "$TE_DIR/mkimage.py" binary "$OUT/ebb.tar" "$EBB_IMAGE" "$TARGET/release/ebb" --path /usr/local/bin/ebb
      ;;
    kafka-consumer)
      # test scaffolding: a debug build is enough (and shares the test build's artefacts)
      [ $build = 0 ] || cargo build -q -p ebb-tests --bin ebb-kafka-consumer
      python3 "$TE_DIR/mkimage.py" binary "$OUT/kafka-consumer.tar" "$CONSUMER_IMAGE" \
        "$TARGET/debug/ebb-kafka-consumer" --path /usr/local/bin/kafka-consumer
      ;;
    *) die "unknown image '$image' (known: ebb kafka-consumer)" ;;
  esac
  archives+=("$OUT/$image.tar")
  log "$image: $(du -h "$OUT/$image.tar" | cut -f1) in $(since "$t0")s"
done
# (status into a variable first: `grep -q` would end the pipe early and pipefail would see SIGPIPE)
status=$("$TE_DIR/node.sh" status 2>/dev/null || true)
if grep -q 'running .* containerd' <<<"$status"; then
  "$TE_DIR/node.sh" import "${archives[@]}"
else
  log "the node is not running: import later with tests/env/node.sh import ${archives[*]}"
fi
