// Package browser holds the end-to-end test of the admin dashboard in a real
// headless Chromium (chromedp): log in, the overview, the queues (asynqmon),
// the orders, and a failed webhook delivery redelivered from its page. It
// skips when no Chromium is installed (`make deps` installs one).
//
// The test saves a full-page PNG of each page in $ASYNCGATE_SCREENSHOTS, or
// in a new temporary folder that it keeps, and logs where.
package browser
