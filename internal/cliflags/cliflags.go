// Package cliflags gives every logferry binary the same flag conventions:
// each flag can also be set by an environment variable named after it
// (PREFIX_FLAG_NAME, upper case, dashes as underscores), the variable is
// shown in --help, and a flag given on the command line wins over the
// environment.
package cliflags

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/pflag"
)

// EnvName is the environment variable that sets flag name for a binary
// whose variables start with prefix (for example "LOGAGENT").
func EnvName(prefix, name string) string {
	return prefix + "_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// DocumentEnv appends "(env PREFIX_NAME)" to the usage of every flag in fs.
// Call it after all flags are defined and before parsing.
func DocumentEnv(fs *pflag.FlagSet, prefix string) {
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Name == "help" || strings.Contains(f.Usage, "(env ") {
			return
		}
		f.Usage = fmt.Sprintf("%s (env %s)", f.Usage, EnvName(prefix, f.Name))
	})
}

// ApplyEnv sets every flag of fs that was not given on the command line from
// its environment variable, if that is set. Call it after parsing. A value
// the flag rejects is an error naming the variable and the value. For list
// flags the variable holds a comma-separated list.
func ApplyEnv(fs *pflag.FlagSet, prefix string) error {
	return applyEnv(fs, prefix, os.LookupEnv)
}

func applyEnv(fs *pflag.FlagSet, prefix string, lookup func(string) (string, bool)) error {
	var err error
	fs.VisitAll(func(f *pflag.Flag) {
		if err != nil || f.Changed || f.Name == "help" {
			return
		}
		name := EnvName(prefix, f.Name)
		v, ok := lookup(name)
		if !ok {
			return
		}
		if e := fs.Set(f.Name, v); e != nil {
			err = fmt.Errorf("environment variable %s=%q: %w", name, v, e)
		}
	})
	return err
}
