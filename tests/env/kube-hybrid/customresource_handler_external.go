/*
Added by ebb's tests/env/kube.sh to the Kubernetes 1.20.2 source (Apache License 2.0).

With KUBE_EXTERNAL_APIEXTENSIONS set, custom resources belong to the external apiextensions-apiserver.
Right after a CRD is created there is a short window (~2 s) before the aggregator proxies its group; in
that window requests fall through to this built-in 1.20 handler, which would serve them with 1.20
semantics (no CEL validation). Answer 503 with Retry-After instead: client-go (kubectl) retries by
itself, other clients see a clear "not yet" rather than a silently unvalidated object.
*/

package apiserver

import (
	"net/http"
	"os"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/endpoints/handlers/responsewriters"
)

var customResourcesServedExternally = os.Getenv("KUBE_EXTERNAL_APIEXTENSIONS") != ""

// refuseExternallyServedCR writes a 503 and returns true when custom resources are served externally.
func refuseExternallyServedCR(w http.ResponseWriter, req *http.Request, gv schema.GroupVersion) bool {
	if !customResourcesServedExternally {
		return false
	}
	w.Header().Set("Retry-After", "1")
	responsewriters.ErrorNegotiated(
		apierrors.NewServiceUnavailable("custom resources of "+gv.Group+" are served by the external apiextensions-apiserver, which is not wired up for this group yet; retry"),
		Codecs, gv, w, req,
	)
	return true
}
