package vfiouser

import (
	"bytes"
	"encoding/json"
	"fmt"
	"syscall"
)

// versionFixedSize is the major and minor before the JSON text.
const versionFixedSize = 4

// maxVersionJSON bounds the capabilities text a peer may send.
const maxVersionJSON = 4096

// Version is the payload of VERSION in both directions.
type Version struct {
	Major, Minor uint16
	Caps         *Capabilities // nil when the peer sent no JSON
}

// Capabilities is the "capabilities" object of VERSION. Pointer fields say
// whether the peer named the capability at all: a reply lists only what the
// client offered.
type Capabilities struct {
	MaxMsgFDs       *uint32        `json:"max_msg_fds,omitempty"`
	MaxDataXferSize *uint32        `json:"max_data_xfer_size,omitempty"`
	MaxDMAMaps      *uint32        `json:"max_dma_maps,omitempty"`
	PgSizes         *uint64        `json:"pgsizes,omitempty"`
	WriteMultiple   *bool          `json:"write_multiple,omitempty"`
	Migration       *MigrationCaps `json:"migration,omitempty"`
}

// MigrationCaps is the "migration" capability (dirty page tracking of the
// legacy DIRTY_PAGES command).
type MigrationCaps struct {
	PgSize        uint64 `json:"pgsize"`
	MaxBitmapSize uint64 `json:"max_bitmap_size"`
}

type versionJSON struct {
	Capabilities *Capabilities `json:"capabilities,omitempty"`
}

// Encode appends the payload of v to b.
func (v Version) Encode(b []byte) ([]byte, error) {
	var fixed [versionFixedSize]byte
	le.PutUint16(fixed[0:], v.Major)
	le.PutUint16(fixed[2:], v.Minor)
	b = append(b, fixed[:]...)
	if v.Caps == nil {
		return b, nil
	}
	js, err := json.Marshal(versionJSON{Capabilities: v.Caps})
	if err != nil {
		return nil, fmt.Errorf("version: encode capabilities: %w", err)
	}
	b = append(b, js...)
	return append(b, 0), nil
}

// DecodeVersion parses a VERSION payload. The JSON text is optional; when
// present it must be NUL-terminated, bounded, and an object.
func DecodeVersion(p []byte) (Version, error) {
	if len(p) < versionFixedSize {
		return Version{}, fmt.Errorf("version: payload %d bytes: %w", len(p), syscall.EINVAL)
	}
	v := Version{Major: le.Uint16(p[0:]), Minor: le.Uint16(p[2:])}
	text := p[versionFixedSize:]
	if len(text) == 0 {
		return v, nil
	}
	if len(text) > maxVersionJSON {
		return v, fmt.Errorf("version: %d bytes of JSON: %w", len(text), syscall.E2BIG)
	}
	if i := bytes.IndexByte(text, 0); i >= 0 {
		text = text[:i]
	} else {
		return v, fmt.Errorf("version: JSON not NUL-terminated: %w", syscall.EINVAL)
	}
	if len(bytes.TrimSpace(text)) == 0 {
		return v, nil
	}
	var js versionJSON
	if err := json.Unmarshal(text, &js); err != nil {
		return v, fmt.Errorf("version: capabilities: %v: %w", err, syscall.EINVAL)
	}
	v.Caps = js.Capabilities
	if v.Caps == nil {
		v.Caps = &Capabilities{}
	}
	return v, nil
}
