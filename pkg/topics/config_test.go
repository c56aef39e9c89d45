package topics

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestDecodeRejects(t *testing.T) {
	long := strings.Repeat("a", 250)
	for _, tc := range []struct {
		name, topic, json string
		field             string // the field the error must name
		value             string // a fragment of the bad value the error must quote ("" to skip)
	}{
		{"no paths", "t", `{}`, "paths", ""},
		{"empty paths", "t", `{"paths":[]}`, "paths", ""},
		{"relative path", "t", `{"paths":["var/log/*.log"]}`, "paths[0]", `"var/log/*.log"`},
		{"second path relative", "t", `{"paths":["/var/log/a","b.log"]}`, "paths[1]", `"b.log"`},
		{"empty path", "t", `{"paths":[""]}`, "paths[0]", ""},
		{"bad glob", "t", `{"paths":["/var/log/[a-"]}`, "paths[0]", `"/var/log/[a-"`},
		{"unclean path", "t", `{"paths":["/var/log/../etc/*"]}`, "paths[0]", `"/var/log/../etc/*"`},
		{"double slash", "t", `{"paths":["/var//log"]}`, "paths[0]", `"/var//log"`},
		{"NUL in path", "t", `{"paths":["/var/log/a\u0000b"]}`, "paths[0]", ""},
		{"bad exclude glob", "t", `{"paths":["/l/*"],"exclude":["[x"]}`, "exclude[0]", `"[x"`},
		{"unknown field", "t", `{"paths":["/l/*"],"pathz":["/x"]}`, "pathz", ""},
		{"unknown nested field", "t", `{"paths":["/l/*"],"multiline":{"pattern":"^x","nope":1}}`, "nope", ""},
		{"paths wrong type", "t", `{"paths":"/var/log/*"}`, "paths", `string`},
		{"shared wrong type", "t", `{"paths":["/l/*"],"shared":"yes"}`, "shared", `string`},
		{"max_line_bytes wrong type", "t", `{"paths":["/l/*"],"max_line_bytes":"1k"}`, "max_line_bytes", `string`},
		{"max_line_bytes negative", "t", `{"paths":["/l/*"],"max_line_bytes":-1}`, "max_line_bytes", "-1"},
		{"max_line_bytes too small", "t", `{"paths":["/l/*"],"max_line_bytes":10}`, "max_line_bytes", "10"},
		{"max_line_bytes too large", "t", `{"paths":["/l/*"],"max_line_bytes":2000000}`, "max_line_bytes", "2000000"},
		{"max_line_bytes fraction", "t", `{"paths":["/l/*"],"max_line_bytes":1.5}`, "max_line_bytes", "1.5"},
		{"bad kafka topic", "t", `{"paths":["/l/*"],"kafka_topic":"a b"}`, "kafka_topic", `"a b"`},
		{"kafka topic too long", "t", `{"paths":["/l/*"],"kafka_topic":"` + long + `"}`, "kafka_topic", long[:20]},
		{"bad key", "t", `{"paths":["/l/*"],"key":"line"}`, "key", `"line"`},
		{"bad start_at", "t", `{"paths":["/l/*"],"start_at":"middle"}`, "start_at", `"middle"`},
		{"bad long_lines", "t", `{"paths":["/l/*"],"long_lines":"drop"}`, "long_lines", `"drop"`},
		{"ignore_older number", "t", `{"paths":["/l/*"],"ignore_older":3600}`, "ignore_older", "3600"},
		{"ignore_older garbage", "t", `{"paths":["/l/*"],"ignore_older":"1 day"}`, "ignore_older", `"1 day"`},
		{"ignore_older too small", "t", `{"paths":["/l/*"],"ignore_older":"1ms"}`, "ignore_older", "1ms"},
		{"ignore_older negative", "t", `{"paths":["/l/*"],"ignore_older":"-5m"}`, "ignore_older", "-5m"},
		{"multiline no pattern", "t", `{"paths":["/l/*"],"multiline":{}}`, "multiline.pattern", ""},
		{"multiline bad regexp", "t", `{"paths":["/l/*"],"multiline":{"pattern":"(["}}`, "multiline.pattern", `"(["`},
		{"multiline bad match", "t", `{"paths":["/l/*"],"multiline":{"pattern":"^x","match":"around"}}`, "multiline.match", `"around"`},
		{"multiline max_lines negative", "t", `{"paths":["/l/*"],"multiline":{"pattern":"^x","max_lines":-3}}`, "multiline.max_lines", "-3"},
		{"multiline max_lines huge", "t", `{"paths":["/l/*"],"multiline":{"pattern":"^x","max_lines":1000000}}`, "multiline.max_lines", "1000000"},
		{"multiline timeout too long", "t", `{"paths":["/l/*"],"multiline":{"pattern":"^x","timeout":"1h"}}`, "multiline.timeout", "1h0m0s"},
		{"multiline timeout wrong type", "t", `{"paths":["/l/*"],"multiline":{"pattern":"^x","timeout":5}}`, "multiline.timeout", "5"},
		{"multiline wrong type", "t", `{"paths":["/l/*"],"multiline":"^x"}`, "multiline", "string"},
		{"trailing data", "t", `{"paths":["/l/*"]} {"paths":["/m/*"]}`, "(document)", ""},
		{"trailing garbage", "t", `{"paths":["/l/*"]}x`, "(document)", ""},
		{"not an object", "t", `["/l/*"]`, "(document)", ""},
		{"empty document", "t", ``, "(document)", ""},
		{"syntax error", "t", `{"paths":["/l/*"],}`, "(document)", ""},
		{"null document", "t", `null`, "paths", ""},
		{"bad topic name", "a/b", `{"paths":["/l/*"]}`, "(name)", `"a/b"`},
		{"reserved topic name", "..", `{"paths":["/l/*"]}`, "(name)", `".."`},
		{"too many paths", "t", `{"paths":[` + strings.Repeat(`"/l/*",`, MaxPaths) + `"/l/*"]}`, "paths", "65"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Decode(tc.topic, []byte(tc.json))
			require.Error(t, err)
			require.ErrorIs(t, err, ErrInvalid)
			var fe *FieldError
			require.True(t, errors.As(err, &fe), "error %q carries no FieldError", err)
			require.True(t, hasField(err, tc.field), "error %q does not name field %q", err, tc.field)
			if tc.value != "" {
				require.Contains(t, err.Error(), tc.value, "error must quote the bad value")
			}
			require.Contains(t, err.Error(), tc.topic, "error must name the topic")
		})
	}
}

// hasField reports whether any FieldError joined into err names field.
func hasField(err error, field string) bool {
	var fe *FieldError
	if errors.As(err, &fe) && fe.Field == field {
		return true
	}
	switch u := err.(type) {
	case interface{ Unwrap() []error }:
		for _, e := range u.Unwrap() {
			if hasField(e, field) {
				return true
			}
		}
	case interface{ Unwrap() error }:
		return hasField(u.Unwrap(), field)
	}
	return false
}

func TestValidateReportsEveryField(t *testing.T) {
	_, err := Decode("t", []byte(`{"paths":["rel"],"key":"x","start_at":"y"}`))
	require.Error(t, err)
	for _, f := range []string{"paths[0]", "key", "start_at"} {
		require.True(t, hasField(err, f), "%q missing from %v", f, err)
	}
}

func TestDefaults(t *testing.T) {
	c, err := Decode("web", []byte(`{"paths":["/var/log/web/*.log"],"multiline":{"pattern":"^\\s"}}`))
	require.NoError(t, err)
	require.Equal(t, Config{
		Paths:        []string{"/var/log/web/*.log"},
		Exclude:      []string{},
		KafkaTopic:   "web",
		MaxLineBytes: DefaultMaxLineBytes,
		LongLines:    LongLinesSplit,
		Key:          KeyFile,
		StartAt:      StartBeginning,
		Multiline: &Multiline{
			Pattern:  `^\s`,
			Match:    MatchAfter,
			MaxLines: DefaultMultilineMaxLines,
			Timeout:  Duration(DefaultMultilineTimeout),
		},
	}, c)
}

func TestGoodConfigsRoundTrip(t *testing.T) {
	for _, js := range []string{
		`{"paths":["/var/log/*.log"]}`,
		`{"paths":["/var/log/**/*.log","/srv/app/log/app.log"],"exclude":["*.gz","/var/log/secret/**"]}`,
		`{"paths":["/var/log/x"],"kafka_topic":"logs.x","shared":true,"key":"host","start_at":"end","paused":true}`,
		`{"paths":["/var/log/x"],"ignore_older":"24h","max_line_bytes":64,"long_lines":"truncate","key":"none"}`,
		`{"paths":["/var/log/java/*.log"],"multiline":{"pattern":"^[[:space:]]","negate":false,"match":"after","max_lines":50,"timeout":"250ms"}}`,
		`{"paths":["/var/log/x"],"multiline":{"pattern":"^\\d{4}-","negate":true,"match":"before"}}`,
		`{"paths":["/var/log/{a,b}/*.log"],"max_line_bytes":1000000,"ignore_older":"87600h"}`,
	} {
		t.Run(js, func(t *testing.T) {
			c1, err := Decode("t", []byte(js))
			require.NoError(t, err)
			enc, err := c1.Encode()
			require.NoError(t, err)
			c2, err := Decode("t", enc)
			require.NoError(t, err, "re-decoding %s", enc)
			require.Equal(t, c1, c2)
			enc2, err := c2.Encode()
			require.NoError(t, err)
			require.Equal(t, string(enc), string(enc2), "encoding is not stable")
		})
	}
}

func TestDurationJSON(t *testing.T) {
	d := Duration(90 * time.Second)
	b, err := d.MarshalJSON()
	require.NoError(t, err)
	require.Equal(t, `"1m30s"`, string(b))
	var back Duration
	require.NoError(t, back.UnmarshalJSON(b))
	require.Equal(t, d, back)
}

// FuzzDecode: decoding and validating arbitrary bytes never panics, and
// whatever is accepted survives an encode/decode round trip unchanged.
func FuzzDecode(f *testing.F) {
	for _, seed := range []string{
		`{"paths":["/var/log/*.log"]}`,
		`{"paths":["/var/log/**/x"],"exclude":["*.gz"],"kafka_topic":"k","shared":true}`,
		`{"paths":["/l/*"],"multiline":{"pattern":"^\\s","match":"before","max_lines":3,"timeout":"1s"}}`,
		`{"paths":["/l/*"],"ignore_older":"1h","key":"none","start_at":"end","long_lines":"truncate"}`,
		`{"paths":["rel"]}`,
		`{"paths":"/x"}`,
		`{"paths":["/l/*"]}garbage`,
		`{"multiline":{"pattern":"(["}}`,
		`{"paths":["/[a-"]}`,
		`null`,
		``,
		`{"ignore_older":"9999999999999h"}`,
	} {
		f.Add("t", []byte(seed))
	}
	f.Add("..", []byte(`{"paths":["/l/*"]}`))
	f.Fuzz(func(t *testing.T, name string, data []byte) {
		c, err := Decode(name, data)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		enc, err := c.Encode()
		if err != nil {
			t.Fatalf("encode accepted config: %v", err)
		}
		c2, err := Decode(name, enc)
		if err != nil {
			t.Fatalf("accepted config %s does not decode again: %v", enc, err)
		}
		enc2, _ := c2.Encode()
		if string(enc) != string(enc2) {
			t.Fatalf("round trip changed the config:\n%s\n%s", enc, enc2)
		}
	})
}
