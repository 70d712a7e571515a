package chart

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"

	yaml "go.yaml.in/yaml/v3"
)

// AlertRulesPath returns the path of the Prometheus rule file the chart ships in its
// PrometheusRule.
func AlertRulesPath() string { return filepath.Join(Dir(), "alerts", "lobby.rules.yaml") }

// AlertRule is one alerting rule of the shipped rule file.
type AlertRule struct {
	Alert string `yaml:"alert"`
	Expr  string `yaml:"expr"`
}

// ruleFile is a Prometheus rule file, as far as the tests read it.
type ruleFile struct {
	Groups []struct {
		Rules []AlertRule `yaml:"rules"`
	} `yaml:"groups"`
}

// AlertRules reads the shipped rule file and returns its alerting rules in order.
func AlertRules() ([]AlertRule, error) {
	raw, err := os.ReadFile(AlertRulesPath())
	if err != nil {
		return nil, fmt.Errorf("read alert rules: %w", err)
	}
	var f ruleFile
	if err := yaml.Unmarshal(raw, &f); err != nil {
		return nil, fmt.Errorf("parse %s: %w", AlertRulesPath(), err)
	}
	var rules []AlertRule
	for _, g := range f.Groups {
		rules = append(rules, g.Rules...)
	}
	return rules, nil
}

// lobbyMetric matches the names of lobby's own metrics in a PromQL expression.
var lobbyMetric = regexp.MustCompile(`\blobby_[a-z_]+\b`)

// Metrics returns the names of lobby's metrics that the rule's expression reads, sorted, each
// once.
func (r AlertRule) Metrics() []string {
	names := lobbyMetric.FindAllString(r.Expr, -1)
	slices.Sort(names)
	return slices.Compact(names)
}
