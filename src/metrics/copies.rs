//! The gauges of table copies under way (`pgcdc_copy_rows`, `_rows_estimated`, `_chunks_done`,
//! `_chunks`, `_eta_seconds`), kept compactly: one record of atomics per table being copied,
//! removed when its copy ends. A first start over thousands of tables plans them all at once;
//! five `IntGaugeVec` series per table kept about 5 KiB per table (see [`super::tables`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Gauge, LabelPair, Metric, MetricFamily, MetricType};

/// One copy's figures.
#[derive(Debug, Default)]
pub struct CopySeries {
    rows: AtomicI64,
    chunks_done: AtomicI64,
    eta_seconds: AtomicI64,
    /// The ETA exists once a rate was measured.
    eta_known: AtomicBool,
    /// The two below exist only once the copy is planned.
    planned: AtomicBool,
    rows_estimated: AtomicI64,
    chunks: AtomicI64,
}

impl CopySeries {
    pub fn set_progress(&self, rows: i64, chunks_done: i64) {
        self.rows.store(rows, Ordering::Relaxed);
        self.chunks_done.store(chunks_done, Ordering::Relaxed);
    }

    pub fn set_plan(&self, rows_estimated: i64, chunks: i64) {
        self.rows_estimated.store(rows_estimated, Ordering::Relaxed);
        self.chunks.store(chunks, Ordering::Relaxed);
        self.planned.store(true, Ordering::Relaxed);
    }

    pub fn set_eta_seconds(&self, seconds: i64) {
        self.eta_seconds.store(seconds, Ordering::Relaxed);
        self.eta_known.store(true, Ordering::Relaxed);
    }
}

/// Every copy under way, registered as one collector of five gauge families (a clone shares
/// them).
#[derive(Clone)]
pub struct CopyGauges {
    inner: Arc<Inner>,
}

struct Inner {
    /// rows, rows estimated, chunks done, chunks, eta seconds.
    descs: [Desc; 5],
    copies: RwLock<HashMap<String, Arc<CopySeries>>>,
}

impl CopyGauges {
    /// `names` and `helps`: rows, rows estimated, chunks done, chunks, eta seconds.
    pub fn new(names: [&str; 5], helps: [&str; 5]) -> Result<CopyGauges, prometheus::Error> {
        let desc = |i: usize| {
            Desc::new(
                names[i].to_owned(),
                helps[i].to_owned(),
                vec!["table".to_owned()],
                HashMap::new(),
            )
        };
        Ok(CopyGauges {
            inner: Arc::new(Inner {
                descs: [desc(0)?, desc(1)?, desc(2)?, desc(3)?, desc(4)?],
                copies: RwLock::new(HashMap::new()),
            }),
        })
    }

    /// The figures of the copy of `table`, shown from now on.
    pub fn table(&self, table: &str) -> Arc<CopySeries> {
        if let Some(series) = self
            .inner
            .copies
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(table)
        {
            return series.clone();
        }
        self.inner
            .copies
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(table.to_owned())
            .or_default()
            .clone()
    }

    /// Stops showing the copy of `table` (it ended, or pgcdc stops).
    pub fn remove(&self, table: &str) {
        self.inner
            .copies
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(table);
    }
}

fn gauge(table: &str, value: i64) -> Metric {
    let mut pair = LabelPair::default();
    pair.set_name("table".to_owned());
    pair.set_value(table.to_owned());
    let mut metric = Metric::from_label(vec![pair]);
    let mut gauge = Gauge::default();
    gauge.set_value(value as f64);
    metric.set_gauge(gauge);
    metric
}

impl Collector for CopyGauges {
    fn desc(&self) -> Vec<&Desc> {
        self.inner.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let copies = self.inner.copies.read().unwrap_or_else(|e| e.into_inner());
        let mut series: [Vec<Metric>; 5] = Default::default();
        for (table, copy) in copies.iter() {
            let [rows, estimated, done, chunks, eta] = &mut series;
            rows.push(gauge(table, copy.rows.load(Ordering::Relaxed)));
            done.push(gauge(table, copy.chunks_done.load(Ordering::Relaxed)));
            if copy.eta_known.load(Ordering::Relaxed) {
                eta.push(gauge(table, copy.eta_seconds.load(Ordering::Relaxed)));
            }
            if copy.planned.load(Ordering::Relaxed) {
                estimated.push(gauge(table, copy.rows_estimated.load(Ordering::Relaxed)));
                chunks.push(gauge(table, copy.chunks.load(Ordering::Relaxed)));
            }
        }
        self.inner
            .descs
            .iter()
            .zip(series)
            .filter(|(_, metrics)| !metrics.is_empty())
            .map(|(desc, metrics)| {
                let mut family = MetricFamily::default();
                family.set_name(desc.fq_name.clone());
                family.set_help(desc.help.clone());
                family.set_field_type(MetricType::GAUGE);
                family.set_metric(metrics);
                family
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_shows_until_removed_and_its_plan_once_planned() {
        let gauges = CopyGauges::new(["a", "b", "c", "d", "e"], ["a", "b", "c", "d", "e"]).unwrap();
        let copy = gauges.table("public.t");
        copy.set_progress(10, 1);
        let names = |g: &CopyGauges| -> Vec<String> {
            g.collect().iter().map(|f| f.name().to_owned()).collect()
        };
        assert_eq!(names(&gauges), ["a", "c"]);
        copy.set_eta_seconds(3);
        assert_eq!(names(&gauges), ["a", "c", "e"]);
        copy.set_plan(100, 4);
        assert_eq!(names(&gauges), ["a", "b", "c", "d", "e"]);
        gauges.remove("public.t");
        assert!(gauges.collect().is_empty());
    }
}
