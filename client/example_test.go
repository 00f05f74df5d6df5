package client_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/asyncgate/asyncgate/client"
)

// Place an order and wait until it is executed.
func ExampleClient_PlaceOrder() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := client.New(serverURL, apiKey)
	if err != nil {
		fmt.Println(err)
		return
	}
	o, err := c.PlaceOrder(ctx, client.OrderRequest{
		AccountId: "acc-example", Symbol: "AAPL", Side: client.Buy, Quantity: 10, Type: client.Market,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("placed:", o.Status)
	o, err = c.WaitForOrder(ctx, o.Id)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("now:", o.Status)
	// Output:
	// placed: pending
	// now: executed
}

// Problems come back as *client.Problem errors.
func ExampleProblem() {
	ctx := context.Background()
	c, _ := client.New(serverURL, apiKey)
	_, err := c.PlaceOrder(ctx, client.OrderRequest{
		AccountId: "acc-example", Symbol: "AAPL", Side: client.Buy, Quantity: -1, Type: client.Market,
	})
	var p *client.Problem
	if errors.As(err, &p) {
		fmt.Println(p.Status, p.Code)
	}
	// Output: 422 validation_failed
}

// Iterate over every order, page after page.
func ExampleClient_Orders() {
	ctx := context.Background()
	c, _ := client.New(serverURL, apiKey)
	n := 0
	for o, err := range c.Orders(ctx, client.OrderFilter{Status: client.OrderStatusExecuted, PageSize: 50}) {
		if err != nil {
			fmt.Println(err)
			return
		}
		if o.Status != client.OrderStatusExecuted {
			fmt.Println("unexpected", o.Status)
		}
		n++
	}
	fmt.Println(n > 0)
	// Output: true
}
