#!/usr/bin/env bash
# Quick client round-trip against every server started by `testenv.sh up` (reads run/env).
#   kube:     kubectl get ns, a Deployment scaled through its /scale subresource, token auth, autoscaling/v2
#             (modern-hybrid only: a CRD with a CEL rule rejects a bad object)
#   kafka:    ApiVersions request on the Kafka wire protocol
#   rabbitmq: AMQP protocol header answered with Connection.Start; management /api/overview
#   nats:     JetStream health and /jsz
#   sqs:      CreateQueue + SendMessage + GetQueueAttributes with boto3 (from moto's venv)
# usage: smoke.sh   (needs kubectl on PATH for the kube part)
set -euo pipefail
COMPONENT=smoke
. "$(dirname "$0")/lib.sh"

[ -f "$TE_RUN/env" ] || die "no $TE_RUN/env: run tests/env/testenv.sh up first"
# shellcheck disable=SC1091
. "$TE_RUN/env"
PY=$TE_HOME/sqs/venv/bin/python
fail=0
check() { # NAME CMD...
  local name=$1; shift
  if out=$("$@" 2>&1); then log "ok   $name${out:+: $(echo "$out" | tail -n1)}"; else log "FAIL $name"; echo "$out" | tail -n 20 >&2; fail=1; fi
}

kube_smoke() {
  local k=(kubectl --kubeconfig "$EBB_KUBECONFIG")
  "${k[@]}" get ns -o name | tr '\n' ' '
  "${k[@]}" delete deployment ebb-smoke --ignore-not-found >/dev/null
  "${k[@]}" create deployment ebb-smoke --image=busybox --replicas=0 >/dev/null
  "${k[@]}" patch deployment ebb-smoke --subresource=scale --type=merge -p '{"spec":{"replicas":2}}' >/dev/null
  local r; r=$("${k[@]}" get --raw /apis/apps/v1/namespaces/default/deployments/ebb-smoke/scale)
  echo "$r" | grep -q '"replicas":2' || { echo "scale: $r"; return 1; }
  # the replicaset controller (KCM) creates the ReplicaSet
  for _ in $(seq 1 50); do "${k[@]}" get rs -l app=ebb-smoke -o name | grep -q . && break; sleep 0.2; done
  "${k[@]}" get rs -l app=ebb-smoke -o name | grep -q . || { echo "no ReplicaSet from the controller manager"; return 1; }
  kubectl --kubeconfig "$EBB_KUBE_TOKEN_KUBECONFIG" auth can-i create deployments >/dev/null
  "${k[@]}" delete deployment ebb-smoke >/dev/null
  echo "$EBB_KUBE_FLAVOR $EBB_KUBE_VERSION: scale 0->2 via /scale, ReplicaSet created, token auth ok"
}

kube_hybrid_smoke() {
  local k=(kubectl --kubeconfig "$EBB_KUBECONFIG")
  "${k[@]}" api-versions | grep -qx autoscaling/v2 || { echo "no autoscaling/v2"; return 1; }
  "${k[@]}" apply -f - >/dev/null <<'YAML'
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.smoke.ebb.dev}
spec:
  group: smoke.ebb.dev
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              min: {type: integer}
              max: {type: integer}
            x-kubernetes-validations:
            - rule: "self.min <= self.max"
              message: "min must not exceed max"
YAML
  "${k[@]}" wait --for condition=established --timeout=30s crd/widgets.smoke.ebb.dev >/dev/null
  # modern-hybrid: until the group's APIService is Available, the aggregator hands custom resources to the
  # built-in 1.20 handler (no CEL). Wait for it after creating a CRD.
  "${k[@]}" wait --for condition=Available --timeout=30s apiservice/v1.smoke.ebb.dev >/dev/null
  local out
  if out=$(echo '{"apiVersion":"smoke.ebb.dev/v1","kind":"Widget","metadata":{"name":"bad"},"spec":{"min":5,"max":1}}' |
    "${k[@]}" create -f - 2>&1); then echo "CEL rule not enforced"; return 1; fi
  echo "$out" | grep -q "min must not exceed max" || { echo "unexpected: $out"; return 1; }
  echo '{"apiVersion":"smoke.ebb.dev/v1","kind":"Widget","metadata":{"name":"good"},"spec":{"min":1,"max":5}}' | "${k[@]}" create -f - >/dev/null
  "${k[@]}" delete crd widgets.smoke.ebb.dev >/dev/null
  # an autoscaling/v2 HPA, read back through v2beta2 as well
  "${k[@]}" apply -f - >/dev/null <<'YAML'
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: ebb-smoke}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: ebb-smoke}
  minReplicas: 1
  maxReplicas: 3
  metrics:
  - type: External
    external:
      metric: {name: queue_lag}
      target: {type: AverageValue, averageValue: "10"}
YAML
  "${k[@]}" get --raw /apis/autoscaling/v2beta2/namespaces/default/horizontalpodautoscalers/ebb-smoke | grep -q '"queue_lag"'
  "${k[@]}" delete hpa.v2.autoscaling ebb-smoke >/dev/null
  echo "autoscaling/v2 HPA round-trip; CEL x-kubernetes-validations enforced"
}

kafka_smoke() { # ApiVersions v0 over the Kafka wire protocol
  /usr/bin/python3 - "$EBB_KAFKA_BOOTSTRAP" <<'PY'
import socket, struct, sys
host, port = sys.argv[1].rsplit(":", 1)
s = socket.create_connection((host, int(port)), timeout=5)
client = b"ebb-smoke"
body = struct.pack(">hhih", 18, 0, 42, len(client)) + client      # api_key, version, correlation id, client id
s.sendall(struct.pack(">i", len(body)) + body)
size = struct.unpack(">i", s.recv(4))[0]
data = b""
while len(data) < size: data += s.recv(size - len(data))
corr, err, n = struct.unpack(">ihi", data[:10])
assert corr == 42 and err == 0, (corr, err)
print(f"ApiVersions: error_code 0, {n} APIs")
PY
}

rabbitmq_smoke() {
  /usr/bin/python3 - <<'PY'
import socket
s = socket.create_connection(("127.0.0.1", 5672), timeout=5)
s.sendall(b"AMQP\x00\x00\x09\x01")
frame = s.recv(7)
assert frame[0] == 1, frame        # method frame: connection.start
print("AMQP 0-9-1 connection.start received")
PY
  curl -fsS "$EBB_RABBITMQ_HTTP_URL/api/overview" | /usr/bin/python3 -c 'import json,sys; d=json.load(sys.stdin); print("management API: RabbitMQ", d["rabbitmq_version"], "Erlang", d["erlang_version"])'
}

nats_smoke() {
  curl -fsS "http://$EBB_NATS_MONITORING/healthz?js-enabled-only=true" >/dev/null
  curl -fsS "http://$EBB_NATS_MONITORING/jsz" | /usr/bin/python3 -c 'import json,sys; d=json.load(sys.stdin); print("JetStream enabled, streams:", d["streams"])'
  /usr/bin/python3 - <<'PY'
import socket
s = socket.create_connection(("127.0.0.1", 4222), timeout=5)
assert s.recv(4096).startswith(b"INFO "), "no INFO line"
print("client port sends INFO")
PY
}

sqs_smoke() {
  AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test "$PY" - <<PY
import boto3
sqs = boto3.client("sqs", endpoint_url="$EBB_SQS_ENDPOINT", region_name="$EBB_AWS_REGION")
url = sqs.create_queue(QueueName="ebb-smoke")["QueueUrl"]
for i in range(3): sqs.send_message(QueueUrl=url, MessageBody=str(i))
n = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]["ApproximateNumberOfMessages"]
assert n == "3", n
sqs.delete_queue(QueueUrl=url)
print("queue round-trip, ApproximateNumberOfMessages=3")
PY
}

case ",$EBB_TESTENV_COMPONENTS," in *,kube,*)
  check kube kube_smoke
  [ "${EBB_KUBE_FLAVOR:-}" = modern-hybrid ] && check kube-modern-hybrid kube_hybrid_smoke ;;
esac
case ",$EBB_TESTENV_COMPONENTS," in *,kafka,*) check kafka kafka_smoke ;; esac
case ",$EBB_TESTENV_COMPONENTS," in *,rabbitmq,*) check rabbitmq rabbitmq_smoke ;; esac
case ",$EBB_TESTENV_COMPONENTS," in *,nats,*) check nats nats_smoke ;; esac
case ",$EBB_TESTENV_COMPONENTS," in *,sqs,*) check sqs sqs_smoke ;; esac
[ $fail = 0 ] || die "smoke checks failed"
log "all smoke checks passed"
