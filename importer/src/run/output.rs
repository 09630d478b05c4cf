//! The report's lists: counts and samples for the text, every id for the JSON file.

use std::path::Path;

use futures::TryStreamExt;

use super::{Domain, ImportError, Run};
use crate::ids::Collection;
use crate::report::{JsonLists, SAMPLE};
use crate::store;

impl Run<'_> {
    /// The collections whose rejects and anomalies belong in this run's report.
    pub(super) fn listed_collections(&self) -> Vec<&'static str> {
        let mut names: Vec<&str> = self
            .opts
            .domain
            .collections()
            .iter()
            .map(|c| c.name())
            .collect();
        if self.opts.domain == Domain::Disputes {
            names.push(Collection::Payments.name());
        }
        names
    }

    /// Fills the report's counts and samples from the tables: complete across resumed
    /// runs, and of bounded size (the full lists go to the JSON file, [`Run::write_report`]).
    pub(super) async fn fill_lists(&mut self) -> Result<(), ImportError> {
        let names = self.listed_collections();
        let mut c = self.db.conn().await?;
        let rejected =
            store::listed_sample(&mut c, store::Listing::Rejects, &names, SAMPLE).await?;
        let anomalies =
            store::listed_sample(&mut c, store::Listing::Anomalies, &names, SAMPLE).await?;
        drop(c);
        (self.report.rejected_counts, self.report.rejected) = rejected;
        (self.report.anomaly_counts, self.report.anomalies) = anomalies;
        Ok(())
    }

    /// Writes the JSON report to `path`, every listed id streamed from the tables.
    pub(super) async fn write_report(&mut self, path: &Path) -> Result<(), ImportError> {
        let failed = |source: std::io::Error| ImportError::Report {
            path: path.to_owned(),
            source,
            report: None,
        };
        let names = self.listed_collections();
        let file = std::fs::File::create(path).map_err(failed)?;
        let mut json =
            JsonLists::start(std::io::BufWriter::new(file), &self.report).map_err(failed)?;
        let mut c = self.db.conn().await?;
        for (name, listing) in [
            ("rejected", store::Listing::Rejects),
            ("anomalies", store::Listing::Anomalies),
        ] {
            json.begin(name).map_err(failed)?;
            let mut rows = store::listed(&mut c, listing, &names);
            while let Some((key, item)) = rows.try_next().await? {
                json.item(&key, &item).map_err(failed)?;
            }
            drop(rows);
            json.end().map_err(failed)?;
        }
        json.finish().map_err(failed)?;
        Ok(())
    }
}
