//! `schedule`, `notify` and `freshness`: what `weir serve` needs to run and watch a pipeline,
//! validated here so that `weir validate` reports a bad cron or time zone like any other
//! mistake. Tick arithmetic lives on [`SchedulePlan`]: croner computes wall-clock ticks in
//! the pipeline's IANA zone (daylight saving time included).

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use croner::Cron;
use croner::parser::CronParser;

use crate::diag::{Diagnostic, did_you_mean};
use crate::spec::{Catchup, NotifyEvent, Overlap};
use crate::spec::{LoadedPipeline, parse_duration};
use crate::ypath;

/// A compiled `schedule`.
#[derive(Debug, Clone)]
pub struct SchedulePlan {
    /// The expression as written.
    pub expr: String,
    pub cron: Cron,
    pub timezone: chrono_tz::Tz,
    pub catchup: Catchup,
    pub overlap: Overlap,
}

/// A compiled `notify` entry. `url` is a secret (registered with the pipeline's secrets).
#[derive(Clone)]
pub struct NotifyPlan {
    pub url: String,
    pub on: Vec<NotifyEvent>,
}

impl std::fmt::Debug for NotifyPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotifyPlan").field("url", &"***").field("on", &self.on).finish()
    }
}

/// What the daemon does with a pipeline besides its tasks.
#[derive(Debug, Clone, Default)]
pub struct Watch {
    pub schedule: Option<SchedulePlan>,
    pub notify: Vec<NotifyPlan>,
    /// `freshness.warn_after`.
    pub stale_after: Option<Duration>,
    /// `freshness.remind_every`: how often a `stale` alert that could not be delivered is
    /// raised again.
    pub remind_every: Option<Duration>,
}

impl Watch {
    /// The webhooks subscribed to `event`.
    pub fn hooks(&self, event: NotifyEvent) -> impl Iterator<Item = &NotifyPlan> {
        self.notify.iter().filter(move |n| n.on.contains(&event))
    }
}

/// Most ticks one catch-up runs (`catchup: all`); older missed ticks are recorded as skipped.
pub const CATCHUP_LIMIT: usize = 100;

impl SchedulePlan {
    /// The first tick strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // Ticks are whole seconds (croner would carry the fraction of `t` over).
        let local = t.trunc_subsecs(0).with_timezone(&self.timezone);
        self.cron.find_next_occurrence(&local, false).ok().map(|d| d.with_timezone(&Utc))
    }

    /// The ticks in `(after, until]`, oldest first.
    pub fn ticks_between(&self, after: DateTime<Utc>, until: DateTime<Utc>) -> Vec<DateTime<Utc>> {
        let mut out = Vec::new();
        let mut t = after;
        while let Some(n) = self.next_after(t) {
            if n > until {
                break;
            }
            out.push(n);
            // Bounded: a seconds cron over a year-long outage would be 31 million ticks.
            if out.len() > 10 * CATCHUP_LIMIT {
                out.drain(..out.len() - CATCHUP_LIMIT - 1);
            }
            t = n;
        }
        out
    }

    /// The latest tick at or before `t`.
    pub fn latest_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = t.trunc_subsecs(0).with_timezone(&self.timezone);
        self.cron.find_previous_occurrence(&local, true).ok().map(|d| d.with_timezone(&Utc))
    }

    /// `0 2 * * * (Europe/Berlin)`.
    pub fn describe(&self) -> String {
        format!("{} ({})", self.expr, self.timezone.name())
    }
}

/// Parse a cron expression: 5 fields, or 6 with seconds first.
pub fn parse_cron(expr: &str) -> Result<Cron, String> {
    let fields = expr.split_whitespace().count();
    if !(5..=6).contains(&fields) {
        return Err(format!(
            "a cron expression has 5 fields (minute hour day-of-month month day-of-week) or 6 with seconds first; this one has {fields}"
        ));
    }
    CronParser::builder().build().parse(expr.trim()).map_err(|e| e.to_string())
}

/// Compile `schedule`, `notify` and `freshness`, pushing a located diagnostic per mistake.
pub(crate) fn compile_watch(p: &LoadedPipeline, diags: &mut Vec<Diagnostic>) -> Watch {
    let spec = &p.spec;
    let mut watch = Watch::default();
    if let Some(s) = &spec.schedule {
        let cron = match parse_cron(&s.cron) {
            Ok(c) => Some(c),
            Err(e) => {
                diags.push(
                    p.diag_value(
                        "cron",
                        &ypath!["schedule", "cron"],
                        s.cron.len(),
                        format!("invalid cron `{}`: {e}", s.cron),
                    )
                    .help("e.g. `0 2 * * *` (02:00 every day), `*/15 * * * *` (every 15 minutes), `0 6 * * MON-FRI`"),
                );
                None
            }
        };
        let tz_name = s.timezone.as_deref().unwrap_or("UTC");
        let timezone = match chrono_tz::Tz::from_str(tz_name) {
            Ok(tz) => Some(tz),
            Err(_) => {
                let names = chrono_tz::TZ_VARIANTS.iter().map(|t| t.name());
                let help = did_you_mean(tz_name, names)
                    .unwrap_or_else(|| "use an IANA name such as `UTC`, `Europe/Berlin`, `America/New_York`".into());
                diags.push(
                    p.diag_value(
                        "timezone",
                        &ypath!["schedule", "timezone"],
                        tz_name.len(),
                        format!("unknown time zone `{tz_name}`"),
                    )
                    .help(help),
                );
                None
            }
        };
        if let (Some(cron), Some(timezone)) = (cron, timezone) {
            watch.schedule = Some(SchedulePlan {
                expr: s.cron.trim().to_string(),
                cron,
                timezone,
                catchup: s.catchup.unwrap_or_default(),
                overlap: s.overlap.unwrap_or_default(),
            });
        }
    }
    watch.stale_after = spec.freshness.as_ref().and_then(|f| parse_duration(&f.warn_after).ok());
    watch.remind_every =
        spec.freshness.as_ref().and_then(|f| f.remind_every.as_ref()).and_then(|d| parse_duration(d).ok());
    for (k, n) in spec.notify.iter().enumerate() {
        let path = ypath!["notify"].index(k);
        // The URL is a secret: registered before anything could print it, never quoted.
        crate::spec::add_secret(&p.secrets, &n.url);
        match url::Url::parse(n.url.trim()) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {}
            _ => diags.push(
                p.diag_key("notify-url", &path.key("url"), "`url` is not an http:// or https:// URL")
                    .help("the webhook URL (e.g. a Slack incoming webhook); write `url: \"${env:ALERT_WEBHOOK}\"` to keep it out of the file"),
            ),
        }
        if n.on.contains(&NotifyEvent::Stale) && spec.freshness.is_none() {
            diags.push(
                p.diag_key("notify-stale", &path.key("on"), "`stale` alerts need `freshness: { warn_after: ... }`")
                    .help("add e.g. `freshness: { warn_after: 26h }` for a daily pipeline"),
            );
        }
        let on = if n.on.is_empty() { NotifyEvent::ALL.to_vec() } else { n.on.clone() };
        watch.notify.push(NotifyPlan { url: n.url.trim().to_string(), on });
    }
    watch
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn plan(expr: &str, tz: &str) -> SchedulePlan {
        SchedulePlan {
            expr: expr.into(),
            cron: parse_cron(expr).unwrap(),
            timezone: tz.parse().unwrap(),
            catchup: Catchup::Last,
            overlap: Overlap::Skip,
        }
    }

    #[test]
    fn five_and_six_fields() {
        let p = plan("0 2 * * *", "UTC");
        let t = Utc.with_ymd_and_hms(2026, 1, 1, 3, 0, 0).unwrap();
        assert_eq!(p.next_after(t), Some(Utc.with_ymd_and_hms(2026, 1, 2, 2, 0, 0).unwrap()));
        let p = plan("*/10 * * * * *", "UTC");
        assert_eq!(p.next_after(t), Some(Utc.with_ymd_and_hms(2026, 1, 1, 3, 0, 10).unwrap()));
        // whole seconds, whatever the fraction of the start
        let frac = t + chrono::Duration::milliseconds(10_250);
        assert_eq!(p.next_after(frac), Some(Utc.with_ymd_and_hms(2026, 1, 1, 3, 0, 20).unwrap()));
        assert!(parse_cron("0 2 * *").unwrap_err().contains("this one has 4"));
        assert!(parse_cron("0 25 * * *").is_err());
    }

    #[test]
    fn ticks_follow_daylight_saving_time() {
        // 02:00 Berlin is 01:00 UTC in winter and 00:00 UTC in summer (the change is on
        // 2026-03-29): a fixed offset taken at start-up would be an hour off for months.
        let p = plan("0 2 * * *", "Europe/Berlin");
        let ticks = p.ticks_between(
            Utc.with_ymd_and_hms(2026, 3, 27, 12, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(2026, 3, 31, 12, 0, 0).unwrap(),
        );
        let hours: Vec<String> = ticks.iter().map(|t| t.format("%d %H:%M").to_string()).collect();
        // 02:00 does not exist on the 29th: it runs at 03:00 CEST (01:00 UTC), once.
        assert_eq!(hours, ["28 01:00", "29 01:00", "30 00:00", "31 00:00"]);
    }

    #[test]
    fn day_fields_combine_like_classic_cron() {
        // the 13th, or any Friday
        let p = plan("0 0 13 * FRI", "UTC");
        let ticks = p.ticks_between(
            Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(2026, 11, 16, 0, 0, 0).unwrap(),
        );
        let days: Vec<u32> = ticks.iter().map(chrono::Datelike::day).collect();
        assert_eq!(days, [6, 13]);
    }

    #[test]
    fn catch_up_window_is_bounded() {
        let p = plan("* * * * * *", "UTC");
        let a = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let ticks = p.ticks_between(a, a + chrono::Duration::hours(2));
        assert!(ticks.len() <= 10 * CATCHUP_LIMIT + 1);
        assert_eq!(ticks.last(), Some(&(a + chrono::Duration::hours(2))));
    }
}
