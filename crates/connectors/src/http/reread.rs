//! `sluice reconcile`'s view of an HTTP source: every page read again (from the start,
//! as a first run would), its records' keys kept in memory and checksummed by range.

use super::{HttpSource, HttpSourceConfig, HttpSourceContext};
use arrow::array::{Array, Int64Array, StringArray};
use arrow::datatypes::DataType;
use sluice_config::reconcile::{Bucket, KeySet, Since, buckets_of};
use sluice_core::node::BoxFuture;
use sluice_core::{ConnectorError, ErrorClass, Source};
use std::collections::BTreeMap;

/// The records of an HTTP source, read again.
pub(crate) struct HttpKeySet {
    config: HttpSourceConfig,
    pipeline: String,
    node: String,
    shown: String,
    /// What was read, once.
    read: Option<Read>,
}

/// The key and `since` column read, and each record's values of them.
struct Read {
    key: String,
    column: Option<String>,
    rows: Vec<(i64, Option<String>)>,
}

impl HttpKeySet {
    pub(crate) fn new(
        config: HttpSourceConfig,
        pipeline: String,
        node: String,
        shown: String,
    ) -> Self {
        HttpKeySet {
            config,
            pipeline,
            node,
            shown: format!("every page of {shown}, read again"),
            read: None,
        }
    }

    /// Reads every page once, keeping `key` and the `since` column of each record.
    async fn load(&mut self, key: &str, since: Option<&Since>) -> Result<Vec<i64>, ConnectorError> {
        let column = since.map(|s| s.column.clone());
        let fresh = match &self.read {
            Some(r) => r.key != key || r.column != column,
            None => true,
        };
        if fresh {
            let mut source = HttpSource::new(
                self.config.clone(),
                HttpSourceContext {
                    pipeline: self.pipeline.clone(),
                    node: self.node.clone(),
                    checkpoint: None,
                    breakers: None,
                    budgets: None,
                    metrics: None,
                },
            )?;
            let mut rows = Vec::new();
            while let Some(b) = source.next_batch().await? {
                let records = &b.batch.records;
                let keys = records.column_by_name(key).ok_or_else(|| {
                    ConnectorError::new(
                        ErrorClass::InvalidRequest,
                        format!("the records have no field `{key}`: name the key with `--key`"),
                    )
                })?;
                let keys = arrow::compute::cast(keys, &DataType::Int64).map_err(|e| {
                    ConnectorError::new(
                        ErrorClass::InvalidRequest,
                        format!("`{key}` is not an integer key ({e})"),
                    )
                })?;
                let keys = keys
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .cloned()
                    .unwrap_or_else(|| Int64Array::from(Vec::<i64>::new()));
                let at = column
                    .as_deref()
                    .and_then(|c| records.column_by_name(c))
                    .and_then(|c| arrow::compute::cast(c, &DataType::Utf8).ok());
                let at = at
                    .as_ref()
                    .and_then(|a| a.as_any().downcast_ref::<StringArray>());
                for i in 0..keys.len() {
                    if keys.is_null(i) {
                        continue;
                    }
                    let when = at.filter(|a| !a.is_null(i)).map(|a| a.value(i).to_owned());
                    rows.push((keys.value(i), when));
                }
            }
            self.read = Some(Read {
                key: key.to_owned(),
                column,
                rows,
            });
        }
        let read = self.read.as_ref().expect("just read");
        Ok(read
            .rows
            .iter()
            .filter(|(_, when)| match (since, when) {
                (Some(s), Some(w)) => w.as_str() >= s.value.as_str(),
                (Some(_), None) => false,
                (None, _) => true,
            })
            .map(|(k, _)| *k)
            .collect())
    }
}

impl KeySet for HttpKeySet {
    fn describe(&self) -> String {
        self.shown.clone()
    }

    fn since_column(&self) -> Option<String> {
        self.config.incremental.as_ref().map(|i| i.field.clone())
    }

    fn count<'a>(
        &'a mut self,
        since: Option<&'a Since>,
    ) -> BoxFuture<'a, Result<i64, ConnectorError>> {
        Box::pin(async move {
            let key = self
                .read
                .as_ref()
                .map(|r| r.key.clone())
                .unwrap_or_else(|| "id".to_owned());
            Ok(self.load(&key, since).await?.len() as i64)
        })
    }

    fn bounds<'a>(
        &'a mut self,
        key: &'a str,
        since: Option<&'a Since>,
    ) -> BoxFuture<'a, Result<Option<(i64, i64)>, ConnectorError>> {
        Box::pin(async move {
            let keys = self.load(key, since).await?;
            Ok(keys.iter().min().copied().zip(keys.iter().max().copied()))
        })
    }

    fn buckets<'a>(
        &'a mut self,
        key: &'a str,
        width: i64,
        since: Option<&'a Since>,
    ) -> BoxFuture<'a, Result<BTreeMap<i64, Bucket>, ConnectorError>> {
        Box::pin(async move { Ok(buckets_of(&self.load(key, since).await?, width)) })
    }

    fn keys<'a>(
        &'a mut self,
        key: &'a str,
        width: i64,
        bucket: i64,
        since: Option<&'a Since>,
    ) -> BoxFuture<'a, Result<Vec<i64>, ConnectorError>> {
        Box::pin(async move {
            let mut keys: Vec<i64> = self
                .load(key, since)
                .await?
                .into_iter()
                .filter(|k| k / width.max(1) == bucket)
                .collect();
            keys.sort_unstable();
            Ok(keys)
        })
    }
}
