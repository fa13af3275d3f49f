//! List parameters and pages. The reference API pages every list (`pageSize` default 20, max
//! 500) and reports `totalElements`; callers either show one page with "N of TOTAL" or walk every
//! page with [`collect_all`], which lives here once instead of once per entity.

use canopy_core::catalog::Kind;

use crate::ClientError;

/// Largest page the server hands out; [`collect_all`] asks for pages of this size.
pub const MAX_PAGE_SIZE: u32 = 500;

/// Query parameters of the list operations. `None`/empty fields are left out of the query.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListParams {
    /// `pageSize`: items per page (server default 20, max 500).
    pub page_size: Option<u32>,
    /// `offset`: index of the first item.
    pub offset: Option<u32>,
    /// `orderBy`: comma list of `field [asc|desc]`.
    pub order_by: Option<String>,
    /// `filter`: `field=value` terms joined by ` OR `.
    pub filter: Option<String>,
    /// `kinds` (applications and packages only): repeated; empty means all kinds.
    pub kinds: Vec<Kind>,
    /// `labels` (deployments, clusters and edges only): repeated, each `k=v[,k=v]`. An edge
    /// matches an item when it carries every pair of it; a deployment when a target label set
    /// holds any pair. Items are OR-ed.
    pub labels: Vec<String>,
}

impl ListParams {
    /// The query pairs, in a stable order, with `kinds` repeated.
    pub fn query(&self) -> Vec<(&'static str, String)> {
        let mut q = Vec::new();
        if let Some(n) = self.page_size {
            q.push(("pageSize", n.to_string()));
        }
        if let Some(n) = self.offset {
            q.push(("offset", n.to_string()));
        }
        if let Some(o) = self.order_by.as_deref().filter(|s| !s.is_empty()) {
            q.push(("orderBy", o.to_owned()));
        }
        if let Some(f) = self.filter.as_deref().filter(|s| !s.is_empty()) {
            q.push(("filter", f.to_owned()));
        }
        for k in &self.kinds {
            q.push(("kinds", k.as_api().to_owned()));
        }
        for l in self.labels.iter().filter(|l| !l.is_empty()) {
            q.push(("labels", l.clone()));
        }
        q
    }
}

/// One page of a list and the total count before paging.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// `totalElements`: how many items match, across all pages.
    pub total: u64,
}

/// Fetches every page, starting at `params.offset`, and returns the items in order. Stops when
/// the total is reached or a page comes back empty (so a list that shrinks meanwhile ends).
pub async fn collect_all<T>(
    params: &ListParams,
    mut fetch: impl AsyncFnMut(&ListParams) -> Result<Page<T>, ClientError>,
) -> Result<Vec<T>, ClientError> {
    let start = u64::from(params.offset.unwrap_or(0));
    let mut page_params = params.clone();
    page_params.page_size = Some(params.page_size.unwrap_or(MAX_PAGE_SIZE).max(1));
    let mut items = Vec::new();
    loop {
        let offset = start + items.len() as u64;
        page_params.offset = Some(u32::try_from(offset).unwrap_or(u32::MAX));
        let page = fetch(&page_params).await?;
        if page.items.is_empty() {
            break;
        }
        items.extend(page.items);
        if start + items.len() as u64 >= page.total || offset >= u64::from(u32::MAX) {
            break;
        }
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_all_params_with_repeated_kinds_and_labels() {
        let p = ListParams {
            page_size: Some(5),
            offset: Some(10),
            order_by: Some("name desc".into()),
            filter: Some("name=web".into()),
            kinds: vec![Kind::Normal, Kind::Addon],
            labels: vec![
                "site=paris,tier=edge".into(),
                String::new(),
                "site=lyon".into(),
            ],
        };
        assert_eq!(
            p.query(),
            vec![
                ("pageSize", "5".to_owned()),
                ("offset", "10".to_owned()),
                ("orderBy", "name desc".to_owned()),
                ("filter", "name=web".to_owned()),
                ("kinds", "KIND_NORMAL".to_owned()),
                ("kinds", "KIND_ADDON".to_owned()),
                ("labels", "site=paris,tier=edge".to_owned()),
                ("labels", "site=lyon".to_owned()),
            ]
        );
        assert!(ListParams::default().query().is_empty());
        let empty = ListParams {
            filter: Some(String::new()),
            ..Default::default()
        };
        assert!(empty.query().is_empty());
    }

    fn fake_pages(total: u32) -> impl AsyncFnMut(&ListParams) -> Result<Page<u32>, ClientError> {
        async move |p: &ListParams| {
            let off = p.offset.unwrap_or(0);
            let size = p.page_size.unwrap_or(20);
            let items = (off..total.min(off + size)).collect();
            Ok(Page {
                items,
                total: u64::from(total),
            })
        }
    }

    #[tokio::test]
    async fn collects_every_page_from_the_offset() {
        let params = ListParams {
            page_size: Some(3),
            offset: Some(2),
            ..Default::default()
        };
        let all = collect_all(&params, fake_pages(10)).await.unwrap();
        assert_eq!(all, (2..10).collect::<Vec<_>>());
        let all = collect_all(&ListParams::default(), fake_pages(0))
            .await
            .unwrap();
        assert!(all.is_empty());
    }

    #[tokio::test]
    async fn stops_on_an_empty_page_even_if_total_says_more() {
        let mut calls = 0;
        let all = collect_all(&ListParams::default(), async |_p: &ListParams| {
            calls += 1;
            Ok(Page {
                items: Vec::<u32>::new(),
                total: 99,
            })
        })
        .await
        .unwrap();
        assert!(all.is_empty());
        assert_eq!(calls, 1);
    }
}
