// Package kubernetes holds the Kubernetes deployment of pnpworker — the
// kustomize base in base/ and the values of the official NATS Helm chart
// in nats-values.yaml — and loads them strictly for the tests that check
// them (here and in cmd/pnp). docs/DEPLOY.md, "Kubernetes", has the steps.
package kubernetes

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// Kustomization is the part of kustomize's Kustomization the base uses;
// LoadBase refuses any other field.
type Kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Namespace  string   `json:"namespace"`
	Resources  []string `json:"resources"`
	Labels     []struct {
		Pairs            map[string]string `json:"pairs"`
		IncludeSelectors bool              `json:"includeSelectors,omitempty"`
		IncludeTemplates bool              `json:"includeTemplates,omitempty"`
	} `json:"labels,omitempty"`
}

// ScaledObject is what the tests read of a KEDA ScaledObject. LoadBase
// decodes it loosely: its strict check is against KEDA's own CRD schema
// (Object.JSON), which this package does not copy.
type ScaledObject struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		ScaleTargetRef struct {
			Name string `json:"name"`
		} `json:"scaleTargetRef"`
		MinReplicaCount *int32 `json:"minReplicaCount"`
		MaxReplicaCount *int32 `json:"maxReplicaCount"`
		Advanced        *struct {
			ScalingModifiers struct {
				Formula          string `json:"formula"`
				Target           string `json:"target"`
				ActivationTarget string `json:"activationTarget"`
				MetricType       string `json:"metricType"`
			} `json:"scalingModifiers"`
		} `json:"advanced"`
		Triggers []struct {
			Name       string            `json:"name"`
			Type       string            `json:"type"`
			MetricType string            `json:"metricType"`
			Metadata   map[string]string `json:"metadata"`
		} `json:"triggers"`
	} `json:"spec"`
}

// Object is one document of a manifest file, decoded into its API type:
// *appsv1.Deployment, *batchv1.Job, *corev1.Service,
// *policyv1.PodDisruptionBudget or *ScaledObject.
type Object struct {
	File  string // relative to the base
	Index int    // of the document in File, from 0
	Kind  string
	Name  string
	Value any
	JSON  []byte // the document as JSON
}

func (o Object) String() string {
	return fmt.Sprintf("%s #%d (%s %s)", o.File, o.Index, o.Kind, o.Name)
}

// PodSpec returns the pod template's spec of a Deployment or Job, or nil.
func (o Object) PodSpec() *corev1.PodSpec {
	switch v := o.Value.(type) {
	case *appsv1.Deployment:
		return &v.Spec.Template.Spec
	case *batchv1.Job:
		return &v.Spec.Template.Spec
	}
	return nil
}

// kinds maps apiVersion/kind to a new value of its Go type; strict says
// whether unknown fields are an error.
var kinds = map[string]struct {
	new    func() any
	strict bool
}{
	"apps/v1/Deployment":            {func() any { return new(appsv1.Deployment) }, true},
	"batch/v1/Job":                  {func() any { return new(batchv1.Job) }, true},
	"v1/Service":                    {func() any { return new(corev1.Service) }, true},
	"policy/v1/PodDisruptionBudget": {func() any { return new(policyv1.PodDisruptionBudget) }, true},
	"keda.sh/v1alpha1/ScaledObject": {func() any { return new(ScaledObject) }, false},
}

var docSep = regexp.MustCompile(`(?m)^---[ \t]*$`)

// Decode decodes the YAML documents of one file (named name in errors)
// into their API types, strictly: an unknown or duplicate field, or a
// kind not listed above, is an error naming the document.
func Decode(name string, data []byte) ([]Object, error) {
	var out []Object
	for i, doc := range docSep.Split(string(data), -1) {
		if len(bytes.TrimSpace(stripComments([]byte(doc)))) == 0 {
			continue
		}
		js, err := yaml.YAMLToJSONStrict([]byte(doc))
		if err != nil {
			return nil, fmt.Errorf("%s #%d: %w", name, i, err)
		}
		var tm struct {
			metav1.TypeMeta `json:",inline"`
			Metadata        struct {
				Name string `json:"name"`
			} `json:"metadata"`
		}
		if err := yaml.Unmarshal(js, &tm); err != nil {
			return nil, fmt.Errorf("%s #%d: %w", name, i, err)
		}
		gvk := tm.APIVersion + "/" + tm.Kind
		k, ok := kinds[gvk]
		if !ok {
			return nil, fmt.Errorf("%s #%d: kind %q is not one this deployment uses", name, i, gvk)
		}
		v := k.new()
		if k.strict {
			err = yaml.UnmarshalStrict(js, v)
		} else {
			err = yaml.Unmarshal(js, v)
		}
		if err != nil {
			return nil, fmt.Errorf("%s #%d (%s %s): %w", name, i, tm.Kind, tm.Metadata.Name, err)
		}
		out = append(out, Object{File: name, Index: i, Kind: tm.Kind, Name: tm.Metadata.Name, Value: v, JSON: js})
	}
	return out, nil
}

// stripComments drops whole-line comments, so that a document of comments
// only counts as empty.
func stripComments(b []byte) []byte {
	var out [][]byte
	for _, l := range bytes.Split(b, []byte("\n")) {
		if !bytes.HasPrefix(bytes.TrimSpace(l), []byte("#")) {
			out = append(out, l)
		}
	}
	return bytes.Join(out, []byte("\n"))
}

// LoadBase reads dir/kustomization.yaml strictly and decodes every
// resource it lists (Decode).
func LoadBase(dir string) (*Kustomization, []Object, error) {
	raw, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		return nil, nil, err
	}
	var k Kustomization
	if err := yaml.UnmarshalStrict(raw, &k); err != nil {
		return nil, nil, fmt.Errorf("kustomization.yaml: %w", err)
	}
	var all []Object
	for _, r := range k.Resources {
		data, err := os.ReadFile(filepath.Join(dir, r))
		if err != nil {
			return nil, nil, fmt.Errorf("kustomization.yaml: resource %s: %w", r, err)
		}
		objs, err := Decode(r, data)
		if err != nil {
			return nil, nil, err
		}
		all = append(all, objs...)
	}
	return &k, all, nil
}
