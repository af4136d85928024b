# Build a static inboxd binary, then ship it alone.
FROM golang:1.27.3 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# `inboxd version` names the build: .git is not copied in, so Go stamps no revision;
# docker build --build-arg VERSION=$(git describe --always --dirty) names it instead.
ARG VERSION=
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w -X main.version=${VERSION}" -o /inboxd ./cmd/inboxd

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /inboxd /inboxd
EXPOSE 8080
ENTRYPOINT ["/inboxd"]
CMD ["serve"]
