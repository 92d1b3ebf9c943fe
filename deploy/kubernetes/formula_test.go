package kubernetes

import (
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"

	"github.com/expr-lang/expr"
)

// exprModule is the formula language KEDA evaluates scalingModifiers in;
// TestScalingFormulasAddTheBacklogs checks it is the version kedaModule
// names.
const exprModule = "github.com/expr-lang/expr"

// TestScalingFormulasAddTheBacklogs: on its own KEDA scales on the largest
// of a ScaledObject's triggers, so jobs of three priorities (or of two
// algorithms of one Deployment) waiting at once would get up to three
// times too few runners. Every ScaledObject of the base combines its
// triggers in a scalingModifiers formula instead. Each formula is compiled
// and run as KEDA does (expr, the result cast to float, the trigger names
// as its variables), and for a spread of backlogs and loads it must ask
// for what the whole backlog needs: every trigger's waiting jobs added up
// over the jobs per runner (lagThreshold) or, where the runners also
// answer requests straight away, the runners that keep the busy ones at
// the prometheus trigger's threshold, whichever is more.
func TestScalingFormulasAddTheBacklogs(t *testing.T) {
	_, objs := loadBase(t)
	sos := scaledObjects(objs)
	if len(sos) == 0 {
		t.Fatal("no ScaledObjects in the base")
	}
	ident := regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	for _, so := range sos {
		if so.Spec.Advanced == nil || so.Spec.Advanced.ScalingModifiers.Formula == "" {
			t.Errorf("scaledobject %s: no scalingModifiers formula: KEDA would scale on the largest of its %d triggers", so.Name, len(so.Spec.Triggers))
			continue
		}
		sm := so.Spec.Advanced.ScalingModifiers
		target, err := strconv.ParseFloat(sm.Target, 64)
		if err != nil || target <= 0 {
			t.Errorf("scaledobject %s: target %q, want a positive number", so.Name, sm.Target)
			continue
		}
		if sm.MetricType != "AverageValue" || sm.ActivationTarget != "0" {
			t.Errorf("scaledobject %s: metricType %q activationTarget %q, want AverageValue (replicas = value / target) and 0 (one waiting job wakes a runner)", so.Name, sm.MetricType, sm.ActivationTarget)
		}
		var lags, busy []string
		lagPerRunner, busyShare := 0.0, 0.0
		env := map[string]any{}
		for i, tr := range so.Spec.Triggers {
			if !ident.MatchString(tr.Name) || env[tr.Name] != nil {
				t.Errorf("scaledobject %s trigger %d: name %q: want a unique name the formula can use", so.Name, i, tr.Name)
				continue
			}
			env[tr.Name] = -1.0
			switch tr.Type {
			case "nats-jetstream":
				l, _ := strconv.ParseFloat(tr.Metadata["lagThreshold"], 64)
				if lagPerRunner != 0 && l != lagPerRunner {
					t.Errorf("scaledobject %s: lagThreshold %v and %v: one runner takes the jobs of every trigger alike", so.Name, l, lagPerRunner)
				}
				lagPerRunner = l
				lags = append(lags, tr.Name)
			case "prometheus":
				busyShare, _ = strconv.ParseFloat(tr.Metadata["threshold"], 64)
				busy = append(busy, tr.Name)
			}
		}
		if lagPerRunner <= 0 || len(busy) > 1 || (len(busy) == 1 && (busyShare <= 0 || busyShare > 1)) {
			t.Errorf("scaledobject %s: lagThreshold %v, %d prometheus triggers with threshold %v", so.Name, lagPerRunner, len(busy), busyShare)
			continue
		}
		// As KEDA's ValidateAndCompileScalingModifiers: every name the
		// formula uses must be a trigger's, and it must run.
		prog, err := expr.Compile("float("+sm.Formula+")", expr.Env(env))
		if err != nil {
			t.Errorf("scaledobject %s: formula %q: %v", so.Name, sm.Formula, err)
			continue
		}
		for _, lag := range []float64{0, 1, 7, 19, 20, 60, 250} {
			for _, load := range []float64{0, 0.5, 3, 9.8} {
				vars := map[string]any{}
				total := 0.0
				for i, n := range lags {
					// Uneven backlogs: the k-th trigger's is lag×(k%3+1).
					v := lag * float64(i%3+1)
					vars[n] = v
					total += v
				}
				want := total / lagPerRunner
				for _, n := range busy {
					vars[n] = load
					want = math.Max(want, load/busyShare)
				}
				out, err := expr.Run(prog, vars)
				got, ok := out.(float64)
				if err != nil || !ok {
					t.Fatalf("scaledobject %s: formula with %v: %v %v", so.Name, vars, out, err)
				}
				if math.Abs(got-want*target) > 1e-9 {
					t.Errorf("scaledobject %s: with %v the formula gives %v: %v replicas, want %v", so.Name, vars, got, math.Ceil(got/target), math.Ceil(want))
				}
			}
		}
	}

	// The formula language is the version KEDA evaluates in.
	keda, err := os.ReadFile(filepath.Join(kedaDir(t), "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	ours, err := os.ReadFile(filepath.Join("..", "..", "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	version := func(gomod []byte) string {
		m := regexp.MustCompile(`(?m)^\s*` + regexp.QuoteMeta(exprModule) + `\s+(\S+)`).FindSubmatch(gomod)
		if m == nil {
			return ""
		}
		return string(m[1])
	}
	if k, o := version(keda), version(ours); k == "" || k != o {
		t.Errorf("%s: KEDA (%s) evaluates formulas with %q, the test with %q", exprModule, kedaModule, k, o)
	}
}
