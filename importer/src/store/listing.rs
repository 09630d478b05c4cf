//! The report's lists (rejects by reason, anomalies by kind), streamed or sampled.

use std::collections::BTreeMap;

use futures::TryStreamExt;
use sqlx::PgConnection;

use crate::report::Listed;

/// Which of the two lists a report names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    /// The open rejects, by reason code.
    Rejects,
    /// The anomalies, by kind.
    Anomalies,
}

impl Listing {
    /// The list's rows as (key, collection, object id, detail) of the collections `$1`,
    /// in order of key, collection, `_id` and detail.
    fn sql(self) -> &'static str {
        match self {
            Listing::Rejects => {
                "SELECT code, collection, object_id, reason FROM legacy_import.rejects \
                 WHERE collection = ANY($1) AND resolved_at IS NULL ORDER BY 1, 2, 3, 4"
            }
            Listing::Anomalies => {
                "SELECT kind, collection, object_id, detail FROM legacy_import.anomalies \
                 WHERE collection = ANY($1) ORDER BY 1, 2, 3, 4"
            }
        }
    }
}

type ListedRow = (String, String, String, String);

fn listed_of((key, collection, object_id, detail): ListedRow) -> (String, Listed) {
    (
        key,
        Listed {
            collection,
            object_id,
            detail,
        },
    )
}

/// Every item of a list in `collections`, grouped by key (reason or kind), then by
/// collection and `_id`: streamed, never held all at once.
pub fn listed<'c>(
    conn: &'c mut PgConnection,
    listing: Listing,
    collections: &'c [&'c str],
) -> impl futures::Stream<Item = Result<(String, Listed), sqlx::Error>> + 'c {
    sqlx::query_as::<_, ListedRow>(listing.sql())
        .bind(collections)
        .fetch(conn)
        .map_ok(listed_of)
}

/// The count of every key of a list in `collections`, and its first `sample` items (in
/// the order of [`listed`]).
///
/// # Errors
/// The database failed.
pub async fn listed_sample(
    conn: &mut PgConnection,
    listing: Listing,
    collections: &[&str],
    sample: usize,
) -> Result<(BTreeMap<String, u64>, BTreeMap<String, Vec<Listed>>), sqlx::Error> {
    let base = listing.sql();
    let counted: Vec<(String, i64)> = sqlx::query_as(&format!(
        "SELECT l.k, count(*) FROM ({base}) AS l(k) GROUP BY 1"
    ))
    .bind(collections)
    .fetch_all(&mut *conn)
    .await?;
    let rows: Vec<ListedRow> = sqlx::query_as(&format!(
        "SELECT k, c, o, d FROM ( \
             SELECT l.*, row_number() OVER (PARTITION BY k ORDER BY c, o, d) AS n \
             FROM ({base}) AS l(k, c, o, d)) AS numbered \
         WHERE n <= $2 ORDER BY k, c, o, d"
    ))
    .bind(collections)
    .bind(i64::try_from(sample).unwrap_or(i64::MAX))
    .fetch_all(&mut *conn)
    .await?;
    let counts = counted
        .into_iter()
        .map(|(k, n)| (k, u64::try_from(n).unwrap_or(0)))
        .collect();
    let mut lists: BTreeMap<String, Vec<Listed>> = BTreeMap::new();
    for row in rows {
        let (key, item) = listed_of(row);
        lists.entry(key).or_default().push(item);
    }
    Ok((counts, lists))
}
