package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/logferry/logferry/internal/devstack"
	"github.com/logferry/logferry/pkg/keyspace"
)

// env is what a run stands on: etcd, the clients, the fleet, the
// coordinators and the sampler; close tears it down in order.
type env struct {
	o       *options
	log     *slog.Logger
	dir     string
	tempDir bool
	etcd    *devstack.Etcd
	ks      keyspace.Space
	cli     *clientv3.Client // the simulator's own: topics, leader, status
	clients []*clientv3.Client
	fl      *fleet
	co      *coords
	sm      *sampler

	cancel context.CancelFunc // stops the fleet's dispatcher and the sampler
	wg     sync.WaitGroup
}

func setUp(ctx context.Context, o *options, log *slog.Logger) (_ *env, err error) {
	e := &env{o: o, log: log, dir: o.dir}
	defer func() {
		if err != nil {
			e.close(true)
		}
	}()
	if e.ks, err = keyspace.New(o.prefix); err != nil {
		return nil, fmt.Errorf("--etcd-prefix: %w", err)
	}
	if e.dir == "" {
		if e.dir, err = os.MkdirTemp("", "fleetsim-"); err != nil {
			return nil, fmt.Errorf("work dir: %w", err)
		}
		e.tempDir = true
	} else if err := os.MkdirAll(e.dir, 0o755); err != nil {
		return nil, fmt.Errorf("--dir %q: %w", e.dir, err)
	}
	if len(o.endpoints) == 0 {
		// Default ticks (not the tests' fast ones): the server should
		// behave as a real one would.
		e.etcd, err = devstack.StartEtcd(devstack.EtcdOptions{Dir: filepath.Join(e.dir, "etcd"), Logger: zap.NewNop()})
		if err != nil {
			return nil, err
		}
		o.endpoints = []string{e.etcd.Endpoint()}
	}
	for i := range o.clients + 1 {
		cli, err := clientv3.New(clientv3.Config{Endpoints: o.endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			return nil, fmt.Errorf("etcd client for %v: %w", o.endpoints, err)
		}
		if i == 0 {
			e.cli = cli
		} else {
			e.clients = append(e.clients, cli)
		}
	}
	if err := e.checkEmpty(ctx); err != nil {
		return nil, err
	}
	rctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	e.fl = newFleet(o, e.ks, e.clients, log)
	if err := e.fl.run(rctx); err != nil {
		return nil, err
	}
	e.co = newCoords(o, e.ks, e.cli, e.dir)
	e.sm = newSampler(e.cli, o.endpoints[0], e.co, log)
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		e.sm.run(rctx, o.sampleEvery)
	}()
	return e, nil
}

// checkEmpty refuses a key space that already holds logferry keys: the
// figures would mix with whatever is there, and nothing here deletes
// someone else's keys.
func (e *env) checkEmpty(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for _, p := range []string{e.ks.TopicsPrefix(), e.ks.AssignPrefix(), e.ks.OffsetsPrefix(), e.ks.ElectionPrefix(), e.ks.StatusPrefix()} {
		resp, err := e.cli.Get(ctx, p, clientv3.WithPrefix(), clientv3.WithKeysOnly(), clientv3.WithLimit(1))
		if err != nil {
			return fmt.Errorf("etcd %v: read %s: %w", e.o.endpoints, p, err)
		}
		if len(resp.Kvs) > 0 {
			return fmt.Errorf("etcd %v already holds %q: run against an empty --etcd-prefix", e.o.endpoints, resp.Kvs[0].Key)
		}
	}
	return nil
}

// close stops the coordinators first (so that the agents leaving does not
// make the leader tear every assignment down), then the agents, then etcd.
// The working directory is kept after a failure or with --keep.
func (e *env) close(failed bool) {
	if e.co != nil {
		e.co.stop()
	}
	if e.fl != nil {
		e.fl.stop()
	}
	if e.cancel != nil {
		e.cancel()
		e.wg.Wait()
		e.fl.wg.Wait()
	}
	for _, c := range append(e.clients, e.cli) {
		if c != nil {
			_ = c.Close()
		}
	}
	if e.etcd != nil {
		e.etcd.Close()
	}
	if e.tempDir && !failed && !e.o.keep {
		_ = os.RemoveAll(e.dir)
	} else if e.dir != "" {
		e.log.Warn("kept the working directory (coordinator logs)", "dir", e.dir)
	}
}
