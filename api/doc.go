// Package api is Evident's HTTP surface (DESIGN §5): echo routes, request and
// response types, bearer-session authentication, roles, idempotency keys, the
// read-your-writes wait, and the one place where errors become RFC 9457
// problem details with a stable code.
package api
