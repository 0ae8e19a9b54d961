package scheduler

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestConfigsValidate: each Config's defaults pass, and each bad field is refused, by
// Validate and by the constructor that takes it.
func TestConfigsValidate(t *testing.T) {
	t.Parallel()
	if err := DefaultConfig().Validate(); err != nil {
		t.Errorf("scheduler defaults: %v", err)
	}
	for name, mod := range map[string]func(*Config){
		"no node":             func(c *Config) { c.Node = "" },
		"negative programs":   func(c *Config) { c.MaxPrograms = -1 },
		"cpu threshold":       func(c *Config) { c.CPUThreshold = 101 },
		"negative queue":      func(c *Config) { c.Queue = -1 },
		"negative retain":     func(c *Config) { c.Retain = -1 },
		"negative bytes":      func(c *Config) { c.RetainBytes = -1 },
		"negative age":        func(c *Config) { c.RetainAge = -time.Second },
		"no dispatch grace":   func(c *Config) { c.DispatchGrace = 0 },
		"no heartbeat":        func(c *Config) { c.HeartbeatTimeout = 0 },
		"no attempts":         func(c *Config) { c.MaxAttempts = 0 },
		"negative case grace": func(c *Config) { c.CaseGrace = -time.Second },
	} {
		cfg := DefaultConfig()
		mod(&cfg)
		if err := cfg.Validate(); err == nil {
			t.Errorf("scheduler config, %s: valid", name)
		}
		if _, err := New(cfg, nil, NewMemJournal(1)); err == nil {
			t.Errorf("scheduler config, %s: New took it", name)
		}
	}

	if err := DefaultMemJournalConfig().Validate(); err != nil {
		t.Errorf("memory journal defaults: %v", err)
	}
	for name, mod := range map[string]func(*MemJournalConfig){
		"keep none":      func(c *MemJournalConfig) { c.KeepFinished = 0 },
		"negative bytes": func(c *MemJournalConfig) { c.RetainBytes = -1 },
		"negative age":   func(c *MemJournalConfig) { c.RetainAge = -time.Second },
	} {
		cfg := DefaultMemJournalConfig()
		mod(&cfg)
		if _, err := NewMemJournalWith(cfg); err == nil {
			t.Errorf("memory journal config, %s: taken", name)
		}
	}

	if err := DefaultSlaveTemplate().Validate(); err == nil {
		t.Error("slave template without the master's address: valid")
	}
	tmpl := DefaultSlaveTemplate()
	tmpl.Master = "10.0.0.1:7700"
	if err := tmpl.Validate(); err != nil {
		t.Errorf("slave template defaults with an address: %v", err)
	}
	for name, mod := range map[string]func(*SlaveTemplate){
		"no image":        func(c *SlaveTemplate) { c.Image = "" },
		"no capacity":     func(c *SlaveTemplate) { c.Capacity = 0 },
		"negative pool":   func(c *SlaveTemplate) { c.Pool = -1 },
		"negative memory": func(c *SlaveTemplate) { c.Memory = -1 },
		"negative grace":  func(c *SlaveTemplate) { c.StopGrace = -time.Second },
	} {
		c := tmpl
		mod(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("slave template, %s: valid", name)
		}
	}
}

// TestMemJournalContext: a MemJournal write with an ended ctx writes nothing.
func TestMemJournalContext(t *testing.T) {
	t.Parallel()
	j := NewMemJournal(10)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	rec := Record{ID: "a", Spec: prog("out a"), Submitted: time.Now()}
	if err := j.Accept(ctx, rec); !errors.Is(err, context.Canceled) {
		t.Errorf("accept: %v, want context.Canceled", err)
	}
	if _, err := j.Get("a"); !errors.Is(err, ErrNotFound) {
		t.Errorf("the refused accept was written: %v", err)
	}
	if err := j.Accept(t.Context(), rec); err != nil {
		t.Fatal(err)
	}
	done := rec
	done.Done = true
	if err := j.Finish(ctx, done); !errors.Is(err, context.Canceled) {
		t.Errorf("finish: %v, want context.Canceled", err)
	}
	if p, _ := j.Pending(); len(p) != 1 {
		t.Errorf("pending after a refused finish: %+v", p)
	}
}
