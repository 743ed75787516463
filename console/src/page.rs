//! Paging of the operator's lists (pure): the `limit` and `after` query parameters, and the
//! page made of the rows a query returned.
//!
//! Keyset paging: a page is the first `limit` rows after the key `after` in the list's order,
//! read with SQL `LIMIT limit + 1` (the extra row tells whether more follow), so a listing
//! never loads more than a page, and rows added or removed meanwhile are not skipped twice.

use p6os_protocol::{DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT};

use crate::error::ApiError;

/// A page's rows and, if more follow, the key to pass as `after`.
pub type Page<T> = (Vec<T>, Option<String>);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageQuery {
    pub limit: usize,
    /// The key of the previous page's last row.
    pub after: Option<String>,
}

impl PageQuery {
    /// Takes `limit` and `after` out of the query's `pairs`, leaving the list's own filters.
    /// A limit that is not a number from 1 to `MAX_PAGE_LIMIT` is a 400 naming `limit`.
    pub fn take(pairs: &mut Vec<(String, String)>) -> Result<PageQuery, ApiError> {
        let mut page = PageQuery {
            limit: DEFAULT_PAGE_LIMIT,
            after: None,
        };
        let mut rest = Vec::new();
        for (key, value) in pairs.drain(..) {
            match key.as_str() {
                "limit" => {
                    page.limit = value
                        .parse()
                        .ok()
                        .filter(|n| (1..=MAX_PAGE_LIMIT).contains(n))
                        .ok_or_else(|| {
                            ApiError::field(
                                "limit",
                                format!(
                                    "limit {value:?} is not a number from 1 to {MAX_PAGE_LIMIT}: \
                                     follow `next` for more"
                                ),
                            )
                        })?;
                }
                "after" => page.after = Some(value),
                _ => rest.push((key, value)),
            }
        }
        *pairs = rest;
        Ok(page)
    }

    /// For lists with no filters: anything but `limit` and `after` is a 400.
    pub fn only(pairs: Vec<(String, String)>) -> Result<PageQuery, ApiError> {
        let mut pairs = pairs;
        let page = PageQuery::take(&mut pairs)?;
        match pairs.first() {
            None => Ok(page),
            Some((key, _)) => Err(ApiError::field(
                key.clone(),
                format!("unknown query parameter {key:?} (limit, after)"),
            )),
        }
    }

    /// The cursor of a newest-first list keyed by a number: rows below `after`, or all
    /// (`i64::MAX`) on the first page. An `after` that is not a number is a 400 naming it.
    pub fn below(&self) -> Result<i64, ApiError> {
        match &self.after {
            None => Ok(i64::MAX),
            Some(a) => a.parse::<i64>().map_err(|_| {
                ApiError::field("after", format!("after {a:?} is not the `next` of a page"))
            }),
        }
    }

    /// How many rows to ask the database for: one more than a page.
    pub fn fetch(&self) -> i64 {
        self.limit as i64 + 1
    }

    /// The page of `rows` (read with [`PageQuery::fetch`]) and, if more follow, the key of its
    /// last row.
    pub fn page<T>(
        &self,
        mut rows: Vec<T>,
        key: impl Fn(&T) -> String,
    ) -> (Vec<T>, Option<String>) {
        if rows.len() <= self.limit {
            return (rows, None);
        }
        rows.truncate(self.limit);
        let next = rows.last().map(key);
        (rows, next)
    }
}

/// The query string's pairs; malformed is a 400.
pub fn query_pairs(query: Option<&str>) -> Result<Vec<(String, String)>, ApiError> {
    serde_urlencoded::from_str(query.unwrap_or(""))
        .map_err(|e| ApiError::bad_request(format!("malformed query string: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(q: &str) -> Vec<(String, String)> {
        query_pairs(Some(q)).unwrap()
    }

    #[test]
    fn limit_and_after_are_taken_and_checked() {
        let mut p = pairs("status=ready&limit=7&after=nuc-9&label=a%3Db");
        let page = PageQuery::take(&mut p).unwrap();
        assert_eq!(page.limit, 7);
        assert_eq!(page.after.as_deref(), Some("nuc-9"));
        assert_eq!(p, pairs("status=ready&label=a%3Db"));
        assert_eq!(
            PageQuery::take(&mut vec![]).unwrap().limit,
            DEFAULT_PAGE_LIMIT
        );
        for bad in ["limit=0", "limit=501", "limit=x", "limit=-1"] {
            let e = PageQuery::take(&mut pairs(bad)).unwrap_err();
            assert_eq!(e.field.as_deref(), Some("limit"), "{bad}");
        }
        assert_eq!(PageQuery::take(&mut pairs("limit=500")).unwrap().limit, 500);
        let e = PageQuery::only(pairs("limit=5&colour=red")).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("colour"));
    }

    #[test]
    fn a_page_says_whether_more_follow() {
        let q = PageQuery {
            limit: 2,
            after: None,
        };
        assert_eq!(q.fetch(), 3);
        assert_eq!(q.page(vec![1, 2], |n| n.to_string()), (vec![1, 2], None));
        assert_eq!(
            q.page(vec![1, 2, 3], |n| n.to_string()),
            (vec![1, 2], Some("2".to_string()))
        );
    }
}
