/*
Added by ebb's tests/env/kube.sh to the Kubernetes 1.20.2 source (Apache License 2.0, like the file it joins).

With KUBE_EXTERNAL_APIEXTENSIONS=<namespace>/<service>:<port> in kube-apiserver's environment, the
apiextensions.k8s.io API and every CRD group are served by an external (newer) apiextensions-apiserver
behind the aggregator instead of the built-in 1.20 one: the APIServices registered for them point at
that Service rather than being "Local". KUBE_EXTERNAL_APIEXTENSIONS_CA=<PEM file> is the CA that signs
its serving certificate (for <service>.<namespace>.svc); without it TLS is not verified.
Start kube-apiserver with --runtime-config=apiextensions.k8s.io/v1=false,apiextensions.k8s.io/v1beta1=false.
*/

package crdregistration

import (
	"io/ioutil"
	"os"
	"strconv"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"
	v1 "k8s.io/kube-aggregator/pkg/apis/apiregistration/v1"
)

type externalAPIExtensions struct {
	namespace, name string
	port            int32
	caBundle        []byte
}

// externalAPIExtensionsFromEnv returns nil when KUBE_EXTERNAL_APIEXTENSIONS is unset.
func externalAPIExtensionsFromEnv() *externalAPIExtensions {
	spec := os.Getenv("KUBE_EXTERNAL_APIEXTENSIONS")
	if spec == "" {
		return nil
	}
	colon := strings.LastIndex(spec, ":")
	slash := strings.Index(spec, "/")
	if colon < 0 || slash < 0 || slash > colon {
		klog.Fatalf("KUBE_EXTERNAL_APIEXTENSIONS=%q: want <namespace>/<service>:<port>", spec)
	}
	port, err := strconv.Atoi(spec[colon+1:])
	if err != nil {
		klog.Fatalf("KUBE_EXTERNAL_APIEXTENSIONS=%q: bad port: %v", spec, err)
	}
	e := &externalAPIExtensions{namespace: spec[:slash], name: spec[slash+1 : colon], port: int32(port)}
	if caFile := os.Getenv("KUBE_EXTERNAL_APIEXTENSIONS_CA"); caFile != "" {
		if e.caBundle, err = ioutil.ReadFile(caFile); err != nil {
			klog.Fatalf("KUBE_EXTERNAL_APIEXTENSIONS_CA: %v", err)
		}
	}
	return e
}

// redirect returns a copy of the APIService that is served by the external server.
func (e *externalAPIExtensions) redirect(in *v1.APIService) *v1.APIService {
	out := in.DeepCopy()
	port := e.port
	out.Spec.Service = &v1.ServiceReference{Namespace: e.namespace, Name: e.name, Port: &port}
	if len(e.caBundle) > 0 {
		out.Spec.CABundle = e.caBundle
	} else {
		out.Spec.InsecureSkipTLSVerify = true
	}
	return out
}

// externalRegistration rewrites the APIServices the CRD registration controller asks for.
type externalRegistration struct {
	AutoAPIServiceRegistration
	target *externalAPIExtensions
}

func (r externalRegistration) AddAPIServiceToSync(in *v1.APIService) {
	r.AutoAPIServiceRegistration.AddAPIServiceToSync(r.target.redirect(in))
}

// WithExternalAPIExtensions wraps the registration given to the CRD registration controller so that
// CRD groups are served by the external apiextensions server (unchanged when it is not configured).
func WithExternalAPIExtensions(reg AutoAPIServiceRegistration) AutoAPIServiceRegistration {
	if target := externalAPIExtensionsFromEnv(); target != nil {
		return externalRegistration{AutoAPIServiceRegistration: reg, target: target}
	}
	return reg
}

// RegisterExternalAPIExtensions registers v1.apiextensions.k8s.io with the external server.
func RegisterExternalAPIExtensions(reg AutoAPIServiceRegistration) {
	target := externalAPIExtensionsFromEnv()
	if target == nil {
		return
	}
	klog.Infof("apiextensions.k8s.io and CRD groups are served by %s/%s:%d", target.namespace, target.name, target.port)
	reg.AddAPIServiceToSync(target.redirect(&v1.APIService{
		ObjectMeta: metav1.ObjectMeta{Name: "v1.apiextensions.k8s.io"},
		// the priorities upstream gives apiextensions.k8s.io/v1
		Spec: v1.APIServiceSpec{Group: "apiextensions.k8s.io", Version: "v1", GroupPriorityMinimum: 16700, VersionPriority: 15},
	}))
}
