package kubernetes

import (
	"os"
	"os/exec"
	"testing"
)

// TestKustomizeBuild: kustomize itself builds the base (.ci/run installs
// it), and what it writes — the namespace and common labels set on every
// object — still decodes strictly, object for object.
func TestKustomizeBuild(t *testing.T) {
	bin, err := exec.LookPath("kustomize")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("no kustomize in PATH (.ci/run installs it)")
		}
		t.Skip("no kustomize in PATH (go install sigs.k8s.io/kustomize/kustomize/v5@v5.8.2)")
	}
	out, err := exec.Command(bin, "build", "base").Output()
	if err != nil {
		t.Fatalf("kustomize build base: %v", err)
	}
	built, err := Decode("kustomize build", out)
	if err != nil {
		t.Fatal(err)
	}
	k, objs := loadBase(t)
	if len(built) != len(objs) {
		t.Errorf("kustomize built %d objects, the base has %d", len(built), len(objs))
	}
	for _, o := range built {
		var ns string
		var lbls map[string]string
		switch v := o.Value.(type) {
		case interface {
			GetNamespace() string
			GetLabels() map[string]string
		}:
			ns, lbls = v.GetNamespace(), v.GetLabels()
		default:
			t.Fatalf("%s: no object metadata", o)
		}
		if ns != k.Namespace {
			t.Errorf("%s: namespace %q, want %q", o, ns, k.Namespace)
		}
		for _, l := range k.Labels {
			for key, val := range l.Pairs {
				if lbls[key] != val {
					t.Errorf("%s: label %s=%q, want %q", o, key, lbls[key], val)
				}
			}
		}
	}
}
