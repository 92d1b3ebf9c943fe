package jsz_test

import (
	"fmt"

	"github.com/pnpworker/pnpworker/internal/jsz"
)

// The address KEDA's nats-jetstream scaler asks for a ScaledObject with
// natsServerMonitoringEndpoint nats:8222 under nats.conf (account APP) and
// against pnp up (account $G).
func ExampleURL() {
	fmt.Println(jsz.URL("nats:8222", "APP", false))
	fmt.Println(jsz.URL("127.0.0.1:8222", "$G", false))
	// Output:
	// http://nats:8222/jsz?acc=APP&consumers=true&config=true
	// http://127.0.0.1:8222/jsz?acc=$G&consumers=true&config=true
}
