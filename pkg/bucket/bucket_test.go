package bucket_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cosnats/cosnats/internal/costest"
	"github.com/cosnats/cosnats/pkg/bucket"
	"github.com/cosnats/cosnats/pkg/layout"
)

// Many processes opening the bucket at once all get it; only one creates it.
func TestOpenConcurrently(t *testing.T) {
	_, js := costest.JetStream(t, costest.StartNATS(t))
	cfg := jetstream.KeyValueConfig{Bucket: "B", Storage: jetstream.FileStorage, Replicas: 1}
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 16 {
		wg.Go(func() {
			_, err := bucket.Open(context.Background(), js, cfg)
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

// A bucket with another storage is refused, naming the setting.
func TestOpenRefusesDrift(t *testing.T) {
	_, js := costest.JetStream(t, costest.StartNATS(t))
	ctx := context.Background()
	if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "B", Storage: jetstream.MemoryStorage}); err != nil {
		t.Fatal(err)
	}
	_, err := bucket.Open(ctx, js, jetstream.KeyValueConfig{Bucket: "B", Storage: jetstream.FileStorage, Replicas: 1})
	if !errors.Is(err, layout.ErrMismatch) || !strings.Contains(err.Error(), "storage") {
		t.Fatalf("got %v", err)
	}
}
