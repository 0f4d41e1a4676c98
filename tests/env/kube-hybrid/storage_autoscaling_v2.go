/*
Added by ebb's tests/env/kube.sh to the Kubernetes 1.20.2 source (Apache License 2.0).
Serves autoscaling/v2 HorizontalPodAutoscalers (GA in upstream 1.23). The v2 schema is the v2beta2 one,
so the same storage serves it; objects are still stored as autoscaling/v1.
*/

package rest

import (
	autoscalingapiv2 "k8s.io/api/autoscaling/v2"
	"k8s.io/apiserver/pkg/registry/generic"
	genericapiserver "k8s.io/apiserver/pkg/server"
	serverstorage "k8s.io/apiserver/pkg/server/storage"
)

func (p RESTStorageProvider) addAutoscalingV2(apiGroupInfo *genericapiserver.APIGroupInfo, apiResourceConfigSource serverstorage.APIResourceConfigSource, restOptionsGetter generic.RESTOptionsGetter) error {
	if !apiResourceConfigSource.VersionEnabled(autoscalingapiv2.SchemeGroupVersion) {
		return nil
	}
	storageMap, err := p.v2beta2Storage(apiResourceConfigSource, restOptionsGetter)
	if err != nil {
		return err
	}
	apiGroupInfo.VersionedResourcesStorageMap[autoscalingapiv2.SchemeGroupVersion.Version] = storageMap
	return nil
}
