// Package client is the Go SDK for the asyncgate HTTP API.
//
// The wire types and a low-level client ([ClientWithResponses], [RawClient])
// are generated from the repository's openapi.yaml by oapi-codegen (see
// generate.go; do not edit api.gen.go by hand). On top of them, [Client] is
// the layer meant for applications:
//
//   - [Client.PlaceOrder] sends an Idempotency-Key of its own (one per call,
//     reused by every retry of that call) and retries network errors, 429,
//     503 and 409 idempotency_key_in_use, honouring Retry-After, a bounded
//     number of times and never past the context's deadline;
//   - [Client.WaitForOrder] long-polls GET /v1/orders/{id}?wait=30s until the
//     order is terminal;
//   - [Client.Orders] iterates over every page of GET /v1/orders;
//   - [Client.CancelOrder] and [Client.Events] cancel an order and read its log;
//   - every answer that is not a success is returned as a *[Problem], the
//     RFC 9457 problem the server sent, so callers can test it with
//     errors.As and look at its Code;
//   - [VerifyWebhook] checks the signature of a webhook asyncgate delivered,
//     for receivers.
//
// A minimal use:
//
//	c, err := client.New("https://asyncgate.example.com", apiKey)
//	o, err := c.PlaceOrder(ctx, client.OrderRequest{AccountId: "acc-1",
//		Symbol: "AAPL", Side: client.Buy, Quantity: 10, Type: client.Market})
//	o, err = c.WaitForOrder(ctx, o.Id)
//	fmt.Println(o.Status) // executed
package client
