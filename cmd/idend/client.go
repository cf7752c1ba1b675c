package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/idend/idend/internal/api/apipb"
)

// callTimeout bounds each unary call to the daemon.
const callTimeout = 30 * time.Second

// client is a connection to the daemon's API socket.
type client struct {
	socket string
	conn   *grpc.ClientConn
	api    apipb.IdendClient
}

// dial connects to the daemon at socket. The connection is made lazily;
// errors of the first call go through client.err.
func dial(socket string) (*client, error) {
	abs, err := filepath.Abs(socket)
	if err != nil {
		return nil, fmt.Errorf("socket %s: %w", socket, err)
	}
	if _, err := os.Stat(abs); err != nil {
		return nil, unreachable(socket, err)
	}

	conn, err := grpc.NewClient("unix://"+abs,
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", socket, err)
	}
	return &client{socket: socket, conn: conn, api: apipb.NewIdendClient(conn)}, nil
}

// Close closes the connection.
func (c *client) Close() error {
	return c.conn.Close()
}

// call returns a context for one unary call.
func (c *client) call(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, callTimeout)
}

// err turns an error of a call into what a user reads: the daemon's own
// message, or why the daemon cannot be reached.
func (c *client) err(err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	switch st.Code() {
	case codes.Unavailable:
		msg := st.Message()
		if strings.Contains(msg, "permission denied") {
			return unreachable(c.socket, fs.ErrPermission)
		}
		return unreachable(c.socket, fs.ErrNotExist)
	case codes.DeadlineExceeded:
		return fmt.Errorf("idend at %s did not answer within %s", c.socket, callTimeout)
	case codes.Canceled:
		return context.Canceled
	}
	return errors.New(st.Message())
}

// unreachable explains why the daemon's socket cannot be used.
func unreachable(socket string, err error) error {
	if errors.Is(err, fs.ErrPermission) {
		return fmt.Errorf("cannot reach idend at %s: permission denied "+
			"(the API socket is for root and the daemon's configured group)", socket)
	}
	return fmt.Errorf("cannot reach idend at %s: is the daemon running?", socket)
}
