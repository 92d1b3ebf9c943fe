package kubernetes

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v5"
	"sigs.k8s.io/yaml"
)

// kedaModule is the KEDA release the ScaledObjects are checked against:
// the newest whose module this Go accepts (v2.21 asks for Go 1.27). It is
// not a dependency — its API package would bring KEDA's whole dependency
// set, some 350 requirements, into go.mod — the tests read its CRD and its
// scalers' sources from the module cache, where `go mod download` puts
// them.
const kedaModule = "github.com/kedacore/keda/v2@v2.20.2"

// kedaDir returns the directory of kedaModule's source, downloading it
// through the Go module proxy if needed.
func kedaDir(t *testing.T) string {
	t.Helper()
	// Outside this module, so that the download neither touches go.mod
	// nor refuses a module that asks for a newer Go than ours.
	cmd := exec.Command("go", "mod", "download", "-json", kedaModule)
	cmd.Dir = t.TempDir()
	cmd.Env = append(os.Environ(), "GOTOOLCHAIN=local", "GOFLAGS=")
	out, err := cmd.Output()
	var info struct{ Dir, Error string }
	if err == nil {
		err = json.Unmarshal(out, &info)
	}
	if err == nil && info.Error != "" {
		err = fmt.Errorf("%s", info.Error)
	}
	if err != nil || info.Dir == "" {
		if os.Getenv("CI") != "" {
			t.Fatalf("go mod download %s: %v %s", kedaModule, err, out)
		}
		t.Skipf("go mod download %s: %v", kedaModule, err)
	}
	return info.Dir
}

// closeObjects makes every object schema that lists its properties refuse
// any other, as a strict decoder would; the API server itself would drop
// unknown fields silently.
func closeObjects(s any) {
	switch v := s.(type) {
	case map[string]any:
		if _, ok := v["properties"]; ok {
			if _, ok := v["additionalProperties"]; !ok && v["x-kubernetes-preserve-unknown-fields"] != true {
				v["additionalProperties"] = false
			}
		}
		for _, c := range v {
			closeObjects(c)
		}
	case []any:
		for _, c := range v {
			closeObjects(c)
		}
	}
}

// scaledObjectSchema compiles the v1alpha1 schema of KEDA's ScaledObject
// CRD, closed (closeObjects).
func scaledObjectSchema(t *testing.T) *jsonschema.Schema {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(kedaDir(t), "config", "crd", "bases", "keda.sh_scaledobjects.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var crd struct {
		Spec struct {
			Versions []struct {
				Name   string
				Schema struct {
					OpenAPIV3Schema map[string]any `json:"openAPIV3Schema"`
				}
			}
		}
	}
	if err := yaml.Unmarshal(raw, &crd); err != nil {
		t.Fatal(err)
	}
	for _, v := range crd.Spec.Versions {
		if v.Name != "v1alpha1" {
			continue
		}
		s := v.Schema.OpenAPIV3Schema
		closeObjects(s)
		js, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		c := jsonschema.NewCompiler()
		c.Draft = jsonschema.Draft7
		if err := c.AddResource("keda-scaledobject.json", bytes.NewReader(js)); err != nil {
			t.Fatal(err)
		}
		return c.MustCompile("keda-scaledobject.json")
	}
	t.Fatal("the CRD has no v1alpha1")
	return nil
}

func validate(s *jsonschema.Schema, doc []byte) error {
	var v any
	if err := json.Unmarshal(doc, &v); err != nil {
		return err
	}
	return s.Validate(v)
}

// TestScaledObjectsMatchKEDA: every ScaledObject validates against KEDA's
// own CRD schema with unknown fields refused, and a misspelt field fails.
func TestScaledObjectsMatchKEDA(t *testing.T) {
	s := scaledObjectSchema(t)
	_, objs := loadBase(t)
	var sample []byte
	for _, o := range objs {
		if o.Kind != "ScaledObject" {
			continue
		}
		sample = o.JSON
		if err := validate(s, o.JSON); err != nil {
			t.Errorf("%s: %v", o, err)
		}
	}
	for _, c := range []struct{ from, to string }{
		{`"minReplicaCount"`, `"minReplicas"`},
		{`"triggers"`, `"trigers"`},
		{`"scaleTargetRef":{`, `"scaleTargetRef":{"names":"x",`},
		{`"type":"nats-jetstream"`, `"type":"nats-jetstream","metadta":{}`},
		{`"minReplicaCount":0`, `"minReplicaCount":"0"`},
	} {
		bad := strings.Replace(string(sample), c.from, c.to, 1)
		if bad == string(sample) {
			t.Fatalf("%s is not in %s", c.from, sample)
		}
		if err := validate(s, []byte(bad)); err == nil {
			t.Errorf("%s instead of %s: accepted", c.to, c.from)
		}
	}
}

// scalerFiles are the sources of the scalers the ScaledObjects use.
var scalerFiles = map[string]string{
	"nats-jetstream": "nats_jetstream_scaler.go",
	"prometheus":     "prometheus_scaler.go",
}

// scalerParams returns the trigger metadata names a KEDA scaler reads
// (its `keda:"name=..."` struct tags) and which of them it requires.
func scalerParams(t *testing.T, dir, file string) (known, required map[string]bool) {
	t.Helper()
	src, err := os.ReadFile(filepath.Join(dir, "pkg", "scalers", file))
	if err != nil {
		t.Fatal(err)
	}
	known, required = map[string]bool{}, map[string]bool{}
	for _, m := range regexp.MustCompile("keda:\"([^\"]*)\"").FindAllSubmatch(src, -1) {
		var name, order string
		optional := false
		for _, part := range strings.Split(string(m[1]), ",") {
			k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
			switch k {
			case "name":
				name = v
			case "order":
				order = v
			case "optional", "default":
				optional = true
			}
		}
		if name == "" || !strings.Contains(order, "triggerMetadata") {
			continue
		}
		known[name] = true
		if !optional && !strings.Contains(order, "authParams") {
			required[name] = true
		}
	}
	if len(known) == 0 {
		t.Fatalf("%s: no keda:\"name=...\" tags; has KEDA changed how scalers declare their metadata?", file)
	}
	return known, required
}

// checkTrigger returns what is wrong with a trigger's metadata for its
// scaler.
func checkTrigger(metadata map[string]string, known, required map[string]bool) []string {
	var bad []string
	for k := range metadata {
		if !known[k] {
			bad = append(bad, "unknown "+k)
		}
	}
	for k := range required {
		if _, ok := metadata[k]; !ok {
			bad = append(bad, "missing "+k)
		}
	}
	return bad
}

// TestTriggerMetadataKnownToScalers: the metadata of every trigger names
// only what its KEDA scaler reads, and everything it requires.
func TestTriggerMetadataKnownToScalers(t *testing.T) {
	dir := kedaDir(t)
	_, objs := loadBase(t)
	for _, so := range scaledObjects(objs) {
		for i, tr := range so.Spec.Triggers {
			file, ok := scalerFiles[tr.Type]
			if !ok {
				t.Errorf("scaledobject %s trigger %d: type %q", so.Name, i, tr.Type)
				continue
			}
			known, required := scalerParams(t, dir, file)
			if bad := checkTrigger(tr.Metadata, known, required); len(bad) > 0 {
				t.Errorf("scaledobject %s trigger %d (%s): %v", so.Name, i, tr.Type, bad)
			}
		}
	}
	known, required := scalerParams(t, dir, scalerFiles["nats-jetstream"])
	for _, k := range []string{"stream", "consumer", "natsServerMonitoringEndpoint"} {
		if !known[k] {
			t.Errorf("nats-jetstream: %s not found among %v", k, known)
		}
	}
	if bad := checkTrigger(map[string]string{"stream": "JOBS", "consumer": "c", "lagTreshold": "5"}, known, required); len(bad) != 1 || bad[0] != "unknown lagTreshold" {
		t.Errorf("a misspelt key: %v", bad)
	}
}
