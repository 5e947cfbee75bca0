package vfiouser

import (
	"fmt"
	"syscall"
)

// feature is one DEVICE_FEATURE the server offers: a handler for each
// method it supports (nil: the method is not supported), as the command
// table has one for each command.
type feature struct {
	// migration says the feature needs a device.Migratable: without
	// one, the server does not offer it.
	migration bool
	// get writes the feature's data into the reply.
	get func(g featureGet) error
	// set performs a SET with the data after argsz and flags. Its reply
	// is the request itself, so a SET that cannot be honoured exactly is
	// refused instead.
	set func(c *Conn, data []byte) error
}

// features maps each feature number the server offers to its handlers.
// Migration features are in handlers_mig.go, dirty logging in
// handlers_logging.go.
var features = [...]feature{
	FeatMigration:       {migration: true, get: getMigration},
	FeatMigDeviceState:  {migration: true, get: getMigDeviceState, set: setMigDeviceState},
	FeatDMALoggingStart: {set: setLoggingStart},
	FeatDMALoggingStop:  {set: setLoggingStop},
	FeatDMALoggingRep:   {get: getLoggingReport},
	FeatMigDataSize:     {migration: true, get: getMigDataSize},
}

// featureOf returns the handlers of feat, and false when the server does
// not offer it to this connection.
func featureOf(c *Conn, feat uint32) (feature, bool) {
	if feat >= uint32(len(features)) {
		return feature{}, false
	}
	f := features[feat]
	if f.get == nil && f.set == nil || f.migration && c.mig == nil {
		return feature{}, false
	}
	return f, true
}

// featureGet is a GET being answered: the connection, the request's fixed
// part and the data after it.
type featureGet struct {
	c    *Conn
	in   Feature
	data []byte
}

func (g featureGet) feature() uint32 { return g.in.Flags & FeatureMask }

// reply starts the reply with the fixed part, argsz covering n data bytes,
// and returns those n bytes for the handler to fill.
func (g featureGet) reply(n int) ([]byte, error) {
	need := uint64(FeatureSize + n)
	if uint64(g.in.Argsz) < need {
		return nil, fmt.Errorf("device feature %d: argsz %d, need %d: %w", g.feature(), g.in.Argsz, need, syscall.EINVAL)
	}
	out := g.c.extend(int(need))
	Feature{Argsz: uint32(need), Flags: g.in.Flags}.Encode(out)
	return out[FeatureSize:], nil
}

// handleDeviceFeature follows VFIO_DEVICE_FEATURE: PROBE answers whether the
// feature supports the methods named with it; otherwise exactly one of GET
// and SET is given, and goes to the feature's handler in features.
//
// The specification wants the reply to a SET or a PROBE to be the request
// payload itself, argsz and flags included; only a GET replies with the
// feature's data. A client may compare the two, so nothing of a SET's
// outcome is written into its reply: what a SET cannot honour exactly is
// refused instead.
func handleDeviceFeature(c *Conn, m *message) error {
	if err := noFDs(m); err != nil {
		return err
	}
	in, err := DecodeFeature(m.payload)
	if err != nil {
		return err
	}
	if in.Flags&^(FeatureMask|FeatureGet|FeatureSet|FeatureProbe) != 0 {
		return fmt.Errorf("device feature: flags %#x: %w", in.Flags, syscall.EINVAL)
	}
	feat := in.Flags & FeatureMask
	get, set, probe := in.Flags&FeatureGet != 0, in.Flags&FeatureSet != 0, in.Flags&FeatureProbe != 0
	f, ok := featureOf(c, feat)
	if !ok {
		return fmt.Errorf("device feature %d: %w", feat, syscall.ENOTSUP)
	}
	if probe {
		if (get && f.get == nil) || (set && f.set == nil) {
			return fmt.Errorf("device feature %d: probe of an unsupported method: %w", feat, syscall.ENOTSUP)
		}
		echoRequest(c, m)
		return nil
	}
	if get == set {
		return fmt.Errorf("device feature %d: need exactly one of GET and SET: %w", feat, syscall.EINVAL)
	}
	if (get && f.get == nil) || (set && f.set == nil) {
		return fmt.Errorf("device feature %d: method not supported: %w", feat, syscall.ENOTSUP)
	}
	data := m.payload[FeatureSize:]
	if set {
		if err := f.set(c, data); err != nil {
			return err
		}
		echoRequest(c, m)
		return nil
	}
	return f.get(featureGet{c: c, in: in, data: data})
}

// echoRequest replies with the request's payload, as a SET or PROBE reply must.
func echoRequest(c *Conn, m *message) {
	copy(c.extend(len(m.payload)), m.payload)
}
