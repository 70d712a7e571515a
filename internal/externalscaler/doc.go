// Package externalscaler is the Go code of KEDA's ExternalScaler gRPC contract, generated from
// externalscaler.proto by hack/protoc.sh. The scaler serves it; tests use its client to play KEDA.
package externalscaler
