# syntax=docker/dockerfile:1
# Build: docker build -t asyncgate .
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/asyncgate ./cmd/asyncgate

# A small image with only the binary and CA certificates, running as non-root.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/asyncgate /asyncgate
USER nonroot:nonroot
EXPOSE 8080
ENTRYPOINT ["/asyncgate"]
CMD ["serve"]
