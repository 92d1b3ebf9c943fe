package kubernetes

import (
	"cmp"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/pnpworker/pnpworker/controller"
	"github.com/pnpworker/pnpworker/discovery"
	"github.com/pnpworker/pnpworker/jobs"
	"github.com/pnpworker/pnpworker/runner"
	"github.com/pnpworker/pnpworker/worker"
)

func loadBase(t *testing.T) (*Kustomization, []Object) {
	t.Helper()
	k, objs, err := LoadBase("base")
	if err != nil {
		t.Fatal(err)
	}
	return k, objs
}

// deployments returns the base's Deployments by name.
func deployments(objs []Object) map[string]*appsv1.Deployment {
	out := map[string]*appsv1.Deployment{}
	for _, o := range objs {
		if d, ok := o.Value.(*appsv1.Deployment); ok {
			out[o.Name] = d
		}
	}
	return out
}

func scaledObjects(objs []Object) []*ScaledObject {
	var out []*ScaledObject
	for _, o := range objs {
		if s, ok := o.Value.(*ScaledObject); ok {
			out = append(out, s)
		}
	}
	return out
}

// flagValue returns the value of --name in args ("--name v" or
// "--name=v") and whether it is there.
func flagValue(args []string, name string) (string, bool) {
	for i, a := range args {
		a = strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-")
		if a == name && i+1 < len(args) {
			return args[i+1], true
		}
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v, true
		}
	}
	return "", false
}

// TestBaseDecodesStrictly: every file of the base is listed in
// kustomization.yaml and decodes strictly into its Kubernetes API type,
// and the base holds what the deployment needs.
func TestBaseDecodesStrictly(t *testing.T) {
	k, objs := loadBase(t)
	files, err := filepath.Glob(filepath.Join("base", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if b := filepath.Base(f); b != "kustomization.yaml" && !slices.Contains(k.Resources, b) {
			t.Errorf("%s is not listed in kustomization.yaml's resources", f)
		}
	}
	if k.Namespace != "pnp" {
		t.Errorf("namespace %q, want pnp (the NATS monitoring endpoint of the ScaledObjects names it)", k.Namespace)
	}
	count := map[string]int{}
	seen := map[string]bool{}
	for _, o := range objs {
		count[o.Kind]++
		if seen[o.Kind+"/"+o.Name] {
			t.Errorf("%s: a second %s named %s", o, o.Kind, o.Name)
		}
		seen[o.Kind+"/"+o.Name] = true
	}
	want := map[string]int{"Deployment": 7, "ScaledObject": 5, "PodDisruptionBudget": 7, "Service": 1, "Job": 1}
	if !maps.Equal(count, want) {
		t.Errorf("kinds %v, want %v", count, want)
	}
}

// TestDecodeRefusesUnknownFields: the strict decoding the tests rely on
// refuses a misspelt field, a duplicate field and a kind it does not know.
func TestDecodeRefusesUnknownFields(t *testing.T) {
	good, err := os.ReadFile(filepath.Join("base", "controller.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Decode("controller.yaml", good); err != nil {
		t.Fatalf("the file itself: %v", err)
	}
	for _, c := range []struct{ name, from, to, want string }{
		{"misspelt container field", "          args:", "          argz:", "argz"},
		{"misspelt pod field", "terminationGracePeriodSeconds:", "terminationGracePeriod:", "terminationGracePeriod"},
		{"misspelt PodDisruptionBudget field", "  minAvailable: 1", "  minAvaliable: 1", "minAvaliable"},
		{"duplicate field", "  replicas: 2\n", "  replicas: 2\n  replicas: 3\n", "replicas"},
		{"unknown kind", "kind: PodDisruptionBudget", "kind: PodDisruptionBudgets", "PodDisruptionBudgets"},
	} {
		t.Run(c.name, func(t *testing.T) {
			bad := strings.Replace(string(good), c.from, c.to, 1)
			if bad == string(good) {
				t.Fatalf("%q is not in controller.yaml", c.from)
			}
			_, err := Decode("controller.yaml", []byte(bad))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one naming %q", err, c.want)
			}
		})
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte("resources: []\nnamespaces: pnp\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadBase(dir); err == nil || !strings.Contains(err.Error(), "namespaces") {
		t.Fatalf("kustomization with an unknown field: error %v", err)
	}
}

// TestDeploymentsAreSound: selectors match their templates, every
// Deployment has a PodDisruptionBudget, the gateway's Service reaches it,
// every container has resource requests and a memory limit and runs as
// non-root, every pnp process has a liveness probe that does not go
// through NATS, and runners are ready only once registered, and replaced
// only by ready ones.
func TestDeploymentsAreSound(t *testing.T) {
	_, objs := loadBase(t)
	deps := deployments(objs)
	var pdbs []*policyv1.PodDisruptionBudget
	var svcs []*corev1.Service
	for _, o := range objs {
		switch v := o.Value.(type) {
		case *policyv1.PodDisruptionBudget:
			pdbs = append(pdbs, v)
		case *corev1.Service:
			svcs = append(svcs, v)
		}
	}
	for name, d := range deps {
		tmpl := labels.Set(d.Spec.Template.Labels)
		if d.Spec.Selector == nil || !labels.SelectorFromSet(d.Spec.Selector.MatchLabels).Matches(tmpl) {
			t.Errorf("deployment %s: selector does not match its pod template", name)
		}
		covered := 0
		for _, p := range pdbs {
			if p.Spec.Selector != nil && labels.SelectorFromSet(p.Spec.Selector.MatchLabels).Matches(tmpl) {
				covered++
			}
		}
		if covered != 1 {
			t.Errorf("deployment %s: %d PodDisruptionBudgets select its pods, want 1", name, covered)
		}
		ps := d.Spec.Template.Spec
		if ps.SecurityContext == nil || ps.SecurityContext.RunAsNonRoot == nil || !*ps.SecurityContext.RunAsNonRoot {
			t.Errorf("deployment %s: not runAsNonRoot", name)
		}
		for _, c := range ps.Containers {
			if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
				t.Errorf("deployment %s, container %s: want cpu and memory requests and a memory limit, got %v", name, c.Name, c.Resources)
			}
			if c.LivenessProbe == nil {
				t.Errorf("deployment %s, container %s: no liveness probe", name, c.Name)
			} else if g := c.LivenessProbe.HTTPGet; g != nil && g.Path == "/readyz" {
				t.Errorf("deployment %s: liveness on /readyz would restart it whenever NATS is away", name)
			}
			if err := checkMetricsPort(c); err != "" {
				t.Errorf("deployment %s: %s", name, err)
			}
			if len(c.Args) > 0 && c.Args[0] == "runner" {
				g := c.LivenessProbe.HTTPGet
				if g == nil || g.Path != "/metrics" || g.Port.StrVal != "metrics" {
					t.Errorf("deployment %s: a runner's liveness probe is GET /metrics on port metrics", name)
				}
				if r := c.ReadinessProbe; r == nil || r.HTTPGet == nil || r.HTTPGet.Path != "/readyz" || r.HTTPGet.Port.StrVal != "metrics" {
					t.Errorf("deployment %s: a runner's readiness probe is GET /readyz on port metrics", name)
				}
				if ru := d.Spec.Strategy.RollingUpdate; ru == nil || ru.MaxUnavailable == nil || ru.MaxUnavailable.IntValue() != 0 {
					t.Errorf("deployment %s: a rolling update may take its only runner away before the new one is ready (want maxUnavailable 0)", name)
				}
			}
		}
	}
	if len(svcs) != 1 {
		t.Fatalf("%d services, want 1 (the gateway's)", len(svcs))
	}
	gw := deps[svcs[0].Name]
	if gw == nil || !labels.SelectorFromSet(svcs[0].Spec.Selector).Matches(labels.Set(gw.Spec.Template.Labels)) {
		t.Errorf("service %s does not select the gateway's pods", svcs[0].Name)
	}
	if r := deps["pnp-controller"].Spec.Replicas; r == nil || *r != 2 {
		t.Errorf("controller replicas %v, want 2", r)
	}
}

// checkMetricsPort returns what is wrong with c's port named metrics: it
// must be where PNP_METRICS has pnp serve /metrics.
func checkMetricsPort(c corev1.Container) string {
	var addr string
	for _, e := range c.Env {
		if e.Name == "PNP_METRICS" {
			addr = e.Value
		}
	}
	for _, p := range c.Ports {
		if p.Name == "metrics" {
			if want := fmt.Sprintf(":%d", p.ContainerPort); addr != want {
				return fmt.Sprintf("port metrics is %d, but PNP_METRICS is %q", p.ContainerPort, addr)
			}
			return ""
		}
	}
	return "no port named metrics (PNP_METRICS, scraped and probed)"
}

// drainOf returns how long the pnp process of args may take to stop after
// SIGTERM: its --drain-timeout (or the default of its package), plus, for
// a runner of worker processes, the grace of a cancelled request.
func drainOf(t *testing.T, args []string) time.Duration {
	t.Helper()
	var d time.Duration
	switch args[0] {
	case "runner":
		d = runner.DefaultDrainTimeout
	case "controller":
		d = controller.DefaultDrainTimeout
	default:
		return 0
	}
	if v, ok := flagValue(args, "drain-timeout"); ok {
		var err error
		if d, err = time.ParseDuration(v); err != nil {
			t.Fatalf("--drain-timeout %q: %v", v, err)
		}
	}
	if _, ok := flagValue(args, "worker"); ok {
		g := worker.DefaultCancelGrace
		if v, ok := flagValue(args, "worker-cancel-grace"); ok {
			var err error
			if g, err = time.ParseDuration(v); err != nil {
				t.Fatalf("--worker-cancel-grace %q: %v", v, err)
			}
		}
		d += g
	}
	return d
}

// TestGracePeriodsExceedDrain: Kubernetes kills a pod
// terminationGracePeriodSeconds after SIGTERM; runners and controllers
// must have finished draining by then.
func TestGracePeriodsExceedDrain(t *testing.T) {
	_, objs := loadBase(t)
	checked := 0
	for name, d := range deployments(objs) {
		for _, c := range d.Spec.Template.Spec.Containers {
			drain := drainOf(t, c.Args)
			if drain == 0 {
				continue
			}
			checked++
			g := d.Spec.Template.Spec.TerminationGracePeriodSeconds
			if g == nil {
				t.Errorf("deployment %s: no terminationGracePeriodSeconds, want more than the drain of %s", name, drain)
			} else if time.Duration(*g)*time.Second <= drain {
				t.Errorf("deployment %s: terminationGracePeriodSeconds %d, want more than the drain of %s", name, *g, drain)
			}
		}
	}
	if checked != 6 {
		t.Errorf("checked %d runners and controllers, want 6", checked)
	}
	if drainOf(t, []string{"runner", "--drain-timeout", "2m"}) != 2*time.Minute {
		t.Error("--drain-timeout is not read")
	}
}

// defaultImage returns the default of variable name in build-images.sh.
func defaultImage(t *testing.T, name string) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "build-images.sh"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(name + `="\$\{` + name + `:-([^}]+)\}"`).FindSubmatch(raw)
	if m == nil {
		t.Fatalf("build-images.sh sets no default %s", name)
	}
	return string(m[1])
}

// TestImagesAreTheBuiltOnes: every container runs an image
// deploy/build-images.sh builds, the Python worker's when it runs worker
// processes.
func TestImagesAreTheBuiltOnes(t *testing.T) {
	_, objs := loadBase(t)
	pnp, py := defaultImage(t, "PNP_IMAGE"), defaultImage(t, "PYTHON_WORKER_IMAGE")
	for _, o := range objs {
		ps := o.PodSpec()
		if ps == nil {
			continue
		}
		for _, c := range ps.Containers {
			want := pnp
			if _, ok := flagValue(c.Args, "worker"); ok {
				want = py
			}
			if c.Image != want {
				t.Errorf("%s: image %s, want %s", o, c.Image, want)
			}
		}
	}
}

// workerFiles are the files deploy/python-worker.Dockerfile copies into
// the image, by their path there.
var workerFiles = map[string]string{
	"/opt/pnp/pnpworker.py":             "sdk/python/pnpworker.py",
	"/opt/pnp/worker/runner_adapter.py": "examples/python/runner_adapter.py",
}

// algorithmsOf returns the algorithms a runner's args serve: its built-ins
// and what its --worker describes, run on this repository's copies of the
// image's files.
func algorithmsOf(t *testing.T, args []string) []string {
	t.Helper()
	var algs []string
	if v, _ := flagValue(args, "algorithms"); v != "none" {
		algs = strings.Split(v, ",")
	}
	cmd, ok := flagValue(args, "worker")
	if !ok {
		return algs
	}
	f := strings.Fields(cmd)
	if len(f) != 3 || f[0] != "python3" || workerFiles[f[1]] == "" || workerFiles[f[2]] == "" {
		t.Fatalf("--worker %q: want python3 with the SDK and a module the image holds", cmd)
	}
	// Debian's python3 first, as the other tests of deploy/: CI installs
	// it with what the worker imports.
	py := "/usr/bin/python3"
	if _, err := os.Stat(py); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("no python3 to describe the worker (CI installs it)")
		}
		t.Skipf("no python3 to describe the worker %q", cmd)
	}
	out, err := exec.Command(py, filepath.Join("..", "..", workerFiles[f[1]]), "--describe", filepath.Join("..", "..", workerFiles[f[2]])).Output()
	if err != nil {
		t.Fatalf("describe %q: %v", cmd, err)
	}
	var hello struct {
		Algorithms []struct{ Name string } `json:"algorithms"`
	}
	if err := json.Unmarshal(out, &hello); err != nil {
		t.Fatalf("describe %q: %v\n%s", cmd, err, out)
	}
	for _, a := range hello.Algorithms {
		algs = append(algs, a.Name)
	}
	return algs
}

// TestScaledObjectsFollowTheController: each ScaledObject scales a runner
// Deployment on the lag of exactly the consumers the controller creates
// for the algorithms that Deployment serves, one per priority
// (jobs.PriorityConsumerName);
// job-only algorithms scale to zero, the others keep a runner and also
// scale on how busy their runners are.
func TestScaledObjectsFollowTheController(t *testing.T) {
	_, objs := loadBase(t)
	deps := deployments(objs)
	targets := map[string]bool{}
	var scaled []string // the algorithms a ScaledObject scales on JOBS
	for _, so := range scaledObjects(objs) {
		d := deps[so.Spec.ScaleTargetRef.Name]
		if d == nil {
			t.Errorf("scaledobject %s: target %q is not a Deployment of the base", so.Name, so.Spec.ScaleTargetRef.Name)
			continue
		}
		targets[d.Name] = true
		if d.Spec.Replicas != nil {
			t.Errorf("deployment %s sets replicas, which KEDA owns: applying the base again would reset them", d.Name)
		}
		args := d.Spec.Template.Spec.Containers[0].Args
		if args[0] != "runner" {
			t.Errorf("scaledobject %s scales %s, not a runner", so.Name, d.Name)
			continue
		}
		algs := algorithmsOf(t, args)
		scaled = append(scaled, algs...)
		var want, got []string
		for _, a := range algs {
			for _, p := range jobs.Priorities {
				want = append(want, jobs.PriorityConsumerName(a, p))
			}
		}
		prom := 0
		for _, tr := range so.Spec.Triggers {
			switch tr.Type {
			case "nats-jetstream":
				got = append(got, tr.Metadata["consumer"])
				if tr.Metadata["stream"] != controller.JobsStream {
					t.Errorf("scaledobject %s: stream %q, want %s", so.Name, tr.Metadata["stream"], controller.JobsStream)
				}
				if !regexp.MustCompile(`^[1-9][0-9]*$`).MatchString(tr.Metadata["lagThreshold"]) || tr.Metadata["activationLagThreshold"] == "" {
					t.Errorf("scaledobject %s: want a positive lagThreshold and an activationLagThreshold, got %v", so.Name, tr.Metadata)
				}
			case "prometheus":
				prom++
				for _, a := range algs {
					if !strings.Contains(tr.Metadata["query"], `algorithm="`+a+`"`) {
						t.Errorf("scaledobject %s: the prometheus query does not select algorithm %s", so.Name, a)
					}
				}
			default:
				t.Errorf("scaledobject %s: trigger %q", so.Name, tr.Type)
			}
		}
		slices.Sort(want)
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Errorf("scaledobject %s: consumers %v, want %v (jobs.PriorityConsumerName of %v)", so.Name, got, want, algs)
		}
		min := so.Spec.MinReplicaCount
		switch {
		case min == nil:
			t.Errorf("scaledobject %s: no minReplicaCount", so.Name)
		case *min == 0 && prom > 0, *min > 0 && prom == 0:
			t.Errorf("scaledobject %s: minReplicaCount %d with %d prometheus triggers: job-only algorithms scale to zero on jobs alone, request-reply ones keep a runner and scale on utilization too", so.Name, *min, prom)
		}
	}
	for name, d := range deps {
		if a := d.Spec.Template.Spec.Containers[0].Args; a[0] == "runner" && !targets[name] {
			t.Errorf("runner deployment %s has no ScaledObject", name)
		}
	}
	// The controller must keep the consumer of every algorithm KEDA
	// scales, also while it has no runner and no job: KEDA reads a
	// missing consumer's lag as the stream's last sequence.
	args := deps["pnp-controller"].Spec.Template.Spec.Containers[0].Args
	v, ok := flagValue(args, "keep-consumers")
	kept := strings.Split(v, ",")
	for _, a := range scaled {
		if !ok || !slices.Contains(kept, a) {
			t.Errorf("controller --keep-consumers %q: lacks %s, which a ScaledObject scales on its JOBS consumer", v, a)
		}
	}
}

// natsUsers loads ../../nats.conf with a password for every variable it
// reads and returns its users by name, and the variables.
func natsUsers(t *testing.T) (map[string]*server.User, []string) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "..", "nats.conf"))
	if err != nil {
		t.Fatal(err)
	}
	var vars []string
	for _, m := range regexp.MustCompile(`password:\s*\$([A-Z0-9_]+)`).FindAllSubmatch(raw, -1) {
		vars = append(vars, string(m[1]))
		t.Setenv(string(m[1]), "secret-"+string(m[1]))
	}
	opts, err := server.ProcessConfigFile(filepath.Join("..", "..", "nats.conf"))
	if err != nil {
		t.Fatal(err)
	}
	users := map[string]*server.User{}
	for _, u := range opts.Users {
		users[u.Username] = u
	}
	if len(users) == 0 || len(vars) != len(users) {
		t.Fatalf("nats.conf: %d users, %d password variables", len(users), len(vars))
	}
	return users, vars
}

// discoveryStream is the stream of the discovery bucket.
const discoveryStream = "KV_" + discovery.Bucket

// mayPublish reports whether nats.conf lets u publish the literal subject.
func mayPublish(u *server.User, subject string) bool {
	p := u.Permissions
	if p == nil || p.Publish == nil {
		return true
	}
	allowed := p.Publish.Allow == nil
	for _, a := range p.Publish.Allow {
		allowed = allowed || server.SubjectsCollide(a, subject)
	}
	for _, d := range p.Publish.Deny {
		allowed = allowed && !server.SubjectsCollide(d, subject)
	}
	return allowed
}

// TestProcessesUseTheirRoles: every pnp process connects as a user of
// nats.conf, with that user's password variable from Secret
// pnp-nats-passwords and its private inbox prefix, reaches JetStream under
// the API prefix of its account (runner teams, in accounts of their own,
// through the streams' account's import), and every runner serves only
// algorithms its user may serve.
func TestProcessesUseTheirRoles(t *testing.T) {
	users, _ := natsUsers(t)
	c := users["controller"]
	if c == nil || c.Account == nil {
		t.Fatal("nats.conf has no user controller in an account")
	}
	streams := c.Account.Name
	_, objs := loadBase(t)
	for _, o := range objs {
		ps := o.PodSpec()
		if ps == nil {
			continue
		}
		c := ps.Containers[0]
		env := map[string]corev1.EnvVar{}
		for _, e := range c.Env {
			env[e.Name] = e
		}
		user := env["NATS_USER"].Value
		u := users[user]
		if u == nil {
			t.Errorf("%s: NATS_USER %q is not a user of nats.conf", o, user)
			continue
		}
		pw := env["NATS_PASSWORD"].ValueFrom
		if pw == nil || pw.SecretKeyRef == nil || pw.SecretKeyRef.Name != "pnp-nats-passwords" || pw.SecretKeyRef.Key != strings.ToUpper(user)+"_PASSWORD" {
			t.Errorf("%s: NATS_PASSWORD %+v, want key %s_PASSWORD of Secret pnp-nats-passwords", o, pw, strings.ToUpper(user))
		}
		if got := env["NATS_INBOX_PREFIX"].Value; got != "_INBOX_"+user {
			t.Errorf("%s: NATS_INBOX_PREFIX %q, want _INBOX_%s", o, got, user)
		}
		// A runner team's account has no JetStream of its own and reaches
		// the streams' account's under the prefix it imports it with; a
		// user of the streams' account uses $JS.API. Binding to discovery
		// is the first JetStream request of every pnp process.
		prefix := env["NATS_JS_API_PREFIX"].Value
		switch api := cmp.Or(prefix, "$JS.API"); {
		case (prefix == "") != (u.Account.Name == streams):
			t.Errorf("%s: user %s of account %s with NATS_JS_API_PREFIX %q: want a prefix exactly outside account %s, which holds the streams", o, user, u.Account.Name, prefix, streams)
		case !mayPublish(u, api+".STREAM.INFO."+discoveryStream):
			t.Errorf("%s: NATS_JS_API_PREFIX %q: user %s may not publish %s.STREAM.INFO.%s, so it cannot bind to discovery", o, prefix, user, api, discoveryStream)
		}
		if c.Args[0] != "runner" {
			continue
		}
		for _, a := range algorithmsOf(t, c.Args) {
			if u.Permissions == nil || u.Permissions.Subscribe == nil || !slices.Contains(u.Permissions.Subscribe.Allow, "run."+a+" runners") {
				t.Errorf("%s serves %s, which user %s may not serve", o, a, user)
			}
		}
	}
}

// TestScaledObjectsReadTheControllersAccount: KEDA reads JOBS in the
// account of nats.conf where the controllers (and so stream JOBS and
// their consumers) live.
func TestScaledObjectsReadTheControllersAccount(t *testing.T) {
	users, _ := natsUsers(t)
	c := users["controller"]
	if c == nil || c.Account == nil {
		t.Fatal("nats.conf has no user controller in an account")
	}
	_, objs := loadBase(t)
	for _, so := range scaledObjects(objs) {
		for i, tr := range so.Spec.Triggers {
			if tr.Type == "nats-jetstream" && tr.Metadata["account"] != c.Account.Name {
				t.Errorf("scaledobject %s trigger %d: account %q, want %q (user controller's in nats.conf)", so.Name, i, tr.Metadata["account"], c.Account.Name)
			}
		}
	}
}
