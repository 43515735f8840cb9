//! `stevedore limits`: list rate and concurrency limits and queue capacities, set or
//! remove one.

use stevedore::admin::{LimitChange, LimitInfo};
use stevedore::{Client, LimitScope, RateLimit};

use crate::args::{Global, LimitsCommand};
use crate::output::{self, Align, Table};

/// What the command line asks, checked before Redis is touched.
pub(crate) enum Plan {
    List,
    Change(LimitScope, LimitChange),
}

impl Plan {
    pub(crate) fn from_args(change: Option<LimitsCommand>) -> anyhow::Result<Plan> {
        Ok(match change {
            None => Plan::List,
            Some(LimitsCommand::Set {
                scope,
                name,
                rate,
                max_running,
                capacity,
            }) => {
                let scope = LimitScope::parse(&scope, &name)?;
                let mut change = LimitChange::default();
                if let Some(n) = capacity {
                    change = change.capacity(Some(n));
                }
                if let Some(r) = rate {
                    change = change.rate(Some(r.parse::<RateLimit>()?));
                }
                if let Some(n) = max_running {
                    change = change.max_running(Some(n));
                }
                if change == LimitChange::default() {
                    return Err(stevedore::Error::InvalidInput(
                        "nothing to change: give --rate, --max-running or --capacity (stevedore limits set type email.send --rate 50/s)".into(),
                    )
                    .into());
                }
                Plan::Change(scope, change)
            }
            Some(LimitsCommand::Remove {
                scope,
                name,
                rate,
                max_running,
                capacity,
            }) => {
                let scope = LimitScope::parse(&scope, &name)?;
                let all = !rate && !max_running && !capacity;
                let mut change = LimitChange::default();
                if rate || all {
                    change = change.rate(None);
                }
                if max_running || all {
                    change = change.max_running(None);
                }
                if capacity || (all && matches!(scope, LimitScope::Queue(_))) {
                    change = change.capacity(None);
                }
                Plan::Change(scope, change)
            }
        })
    }

    pub(crate) async fn run(self, client: &Client, g: &Global) -> anyhow::Result<()> {
        let admin = client.admin();
        let shown = match self {
            Plan::List => admin.limits().await?,
            Plan::Change(scope, change) => {
                admin.set_limits(&scope, &change).await?;
                admin
                    .limits()
                    .await?
                    .into_iter()
                    .filter(|l| l.scope == scope.kind() && l.name == scope.name())
                    .collect()
            }
        };
        if g.json {
            return output::print_json(&shown);
        }
        if shown.is_empty() {
            return output::print(&format!("no limits under prefix {:?}\n", g.prefix));
        }
        output::print(&table(&shown))
    }
}

fn table(limits: &[LimitInfo]) -> String {
    let mut t = Table::new(&[
        ("SCOPE", Align::Left),
        ("NAME", Align::Left),
        ("RATE", Align::Left),
        ("MAX RUNNING", Align::Right),
        ("CAPACITY", Align::Right),
        ("QUEUE", Align::Left),
        ("TOKENS", Align::Right),
        ("RUNNING", Align::Right),
        ("WAITING", Align::Right),
        ("REFUSED", Align::Right),
    ]);
    let dash = || "-".to_string();
    for l in limits {
        let head = vec![
            l.scope.to_string(),
            l.name.clone(),
            l.rate.clone().unwrap_or_else(dash),
            l.max_running.map_or_else(dash, |n| n.to_string()),
            l.capacity.map_or_else(dash, |n| n.to_string()),
        ];
        if l.queues.is_empty() {
            t.row([head.clone(), vec![dash(), dash(), dash(), dash(), dash()]].concat());
        }
        for q in &l.queues {
            t.row(
                [
                    head.clone(),
                    vec![
                        q.queue.clone(),
                        q.tokens.map_or_else(dash, |n| format!("{n:.0}")),
                        q.running.map_or_else(dash, |n| n.to_string()),
                        q.waiting.map_or_else(dash, |n| n.to_string()),
                        q.refused.map_or_else(dash, |n| n.to_string()),
                    ],
                ]
                .concat(),
            );
        }
    }
    t.render()
}
