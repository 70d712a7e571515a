package chart

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Query is one PromQL expression of the Grafana dashboard.
type Query struct {
	// Panel is the title of the panel that shows it.
	Panel string
	// RefID is the query's id within its panel.
	RefID string
	// Expr is the expression as the dashboard stores it, with Grafana variables such as $route.
	Expr string
}

// PromQL returns the expression with the dashboard's variables replaced so that Prometheus can run
// it as is: $route becomes the regular expression route (".*" matches every route).
func (q Query) PromQL(route string) string {
	return strings.ReplaceAll(q.Expr, "$route", route)
}

// DashboardPath returns the path of the dashboard JSON the chart ships.
func DashboardPath() string { return filepath.Join(Dir(), "dashboards", "lobby.json") }

// Dashboard reads the shipped dashboard and returns every PromQL expression in it, panel by
// panel, including those of the template variables (as panel "variable <name>").
func Dashboard() ([]Query, error) {
	raw, err := os.ReadFile(DashboardPath())
	if err != nil {
		return nil, fmt.Errorf("read dashboard: %w", err)
	}
	return DashboardQueries(raw)
}

// DashboardQueries returns the PromQL expressions of a Grafana dashboard JSON document.
func DashboardQueries(raw []byte) ([]Query, error) {
	var d struct {
		Panels     []panel `json:"panels"`
		Templating struct {
			List []struct {
				Name  string          `json:"name"`
				Type  string          `json:"type"`
				Query json.RawMessage `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(raw, &d); err != nil {
		return nil, fmt.Errorf("parse dashboard: %w", err)
	}
	var out []Query
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct {
			Query string `json:"query"`
		}
		if err := json.Unmarshal(v.Query, &q); err != nil {
			return nil, fmt.Errorf("parse dashboard variable %s: %w", v.Name, err)
		}
		out = append(out, Query{Panel: "variable " + v.Name, RefID: v.Name, Expr: q.Query})
	}
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			for _, t := range p.Targets {
				out = append(out, Query{Panel: p.Title, RefID: t.RefID, Expr: t.Expr})
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	return out, nil
}

type panel struct {
	Title   string `json:"title"`
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
	Panels []panel `json:"panels"`
}
