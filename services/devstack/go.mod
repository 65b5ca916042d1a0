module github.com/wsgate/wsgate/services/devstack

go 1.26.0

require (
	github.com/golang-jwt/jwt/v5 v5.3.1
	github.com/nats-io/nats-server/v2 v2.15.2
	github.com/nats-io/nats.go v1.55.0
	github.com/wsgate/wsgate/api v0.0.0
	github.com/wsgate/wsgate/services/dispatcher v0.0.0
	github.com/wsgate/wsgate/services/edge v0.0.0
	github.com/wsgate/wsgate/services/internal v0.0.0
	go.uber.org/goleak v1.3.0
)

require (
	github.com/antithesishq/antithesis-sdk-go v0.8.0-default-no-op // indirect
	github.com/google/go-tpm v0.9.8 // indirect
	github.com/gorilla/websocket v1.5.3 // indirect
	github.com/kelseyhightower/envconfig v1.4.0 // indirect
	github.com/klauspost/compress v1.20.3 // indirect
	github.com/minio/highwayhash v1.0.4 // indirect
	github.com/nats-io/jwt/v2 v2.8.2 // indirect
	github.com/nats-io/nkeys v0.4.16 // indirect
	github.com/nats-io/nuid v1.0.1 // indirect
	github.com/wsgate/wsgate/clients/js v0.0.0-00010101000000-000000000000 // indirect
	golang.org/x/crypto v0.58.0 // indirect
	golang.org/x/sys v0.49.0 // indirect
	golang.org/x/time v0.16.0 // indirect
)

replace (
	github.com/wsgate/wsgate/api => ../../api
	github.com/wsgate/wsgate/clients/js => ../../clients/js
	github.com/wsgate/wsgate/services/dispatcher => ../dispatcher
	github.com/wsgate/wsgate/services/edge => ../edge
	github.com/wsgate/wsgate/services/internal => ../internal
)
