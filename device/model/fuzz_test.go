package model

import (
	"bytes"
	"os"
	"reflect"
	"testing"
)

func FuzzDecodeDescription(f *testing.F) {
	own, err := Describe(All()...)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(own)
	for _, p := range []string{"testdata/v1-only.json", "testdata/no-off-value.json"} {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"models":{"a.b/c":{"latest_version":1,"params":{"e":{"type":"enum","init_value":"x","allowed_values":["x","y"],"description":""}},"versions":{"1":{"e":"y"}}}}}`))
	f.Add([]byte(`{"models":{"a.b/c":{"latest_version":1,"params":{"b":{"type":"bool","init_value":true,"off_value":false,"description":""}},"versions":{"1":{"b":true}}}}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		ms, err := DecodeDescription(bytes.NewReader(data))
		if err != nil {
			return
		}
		// Whatever decodes is valid, describes itself, and reads back the same.
		out, err := Describe(ms...)
		if err != nil {
			t.Fatalf("decoded models do not describe: %v", err)
		}
		back, err := DecodeDescription(bytes.NewReader(out))
		if err != nil {
			t.Fatalf("own description does not decode: %v\n%s", err, out)
		}
		if !reflect.DeepEqual(back, ms) {
			t.Fatalf("round trip changed the models:\n%s", out)
		}
		// Every model accepts its own versions' lists, and the check runs.
		for _, m := range ms {
			for _, v := range m.Versions {
				c, err := m.Resolve(v.Number, nil)
				if err != nil {
					t.Fatalf("model %s cannot start as its version %d: %v", m.Name, v.Number, err)
				}
				if ps := Check(c.Source(), ms); len(ps) != 0 {
					t.Fatalf("model %s version %d refused by itself: %v", m.Name, v.Number, ps)
				}
			}
		}
	})
}

func FuzzDecodeSource(f *testing.F) {
	f.Add([]byte(`{"model":"e1000e-vfu.dev/devices/e1000e-82574l","params":{"rx-filter-size":16},"version":2}`))
	f.Add([]byte(`{"model":"e1000e-vfu.dev/devices/e1000e-82574l","params":{}}`))
	f.Add([]byte(`{"model":"a.b/c","params":{"x":true,"y":"s","z":-3}}`))
	f.Add([]byte(`{"model":"e1000e-vfu.dev/devices/e1000e-82574l","params":{},"version":1,"mac":"02:e1:0e:01:02:03"}`))
	f.Add([]byte(`{"model":"example.org/devices/every-type","params":{"bool":true,"enum":"slow","int":3,"string":"x"}}`))
	f.Add([]byte(`{"model":"example.org/devices/every-type","params":{"enum":"medium","int":"3"}}`))
	dest := append(All(), mustLoad("testdata/every-type.json")...)
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := DecodeSource(bytes.NewReader(data))
		if err != nil {
			return
		}
		// What the check accepts, a destination starts with.
		if ps := Check(s, dest); len(ps) == 0 {
			for _, m := range dest {
				if m.Name != s.Model {
					continue
				}
				if _, err := m.ResolveList(s.Params); err != nil {
					t.Fatalf("the check accepts %s, ResolveList refuses it: %v", data, err)
				}
			}
		}
		b, err := s.MarshalJSON()
		if err != nil {
			t.Fatalf("decoded source does not encode: %v", err)
		}
		back, err := DecodeSource(bytes.NewReader(b))
		if err != nil || !reflect.DeepEqual(back, s) {
			t.Fatalf("round trip: %+v, %v; want %+v", back, err, s)
		}
	})
}
