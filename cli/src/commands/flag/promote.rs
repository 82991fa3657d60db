//! `flag promote KEY --from ENV --to ENV`: the server copies the flag (and, if asked, the
//! segments it uses) from one environment to another.

use flagstaff_proto::pb;

use crate::session::Session;

/// `flag promote`, optionally `--with-segments`.
pub async fn promote(
    session: &mut Session,
    key: &str,
    from: &str,
    to: &str,
    with_segments: bool,
    message: Option<&str>,
) -> anyhow::Result<String> {
    let (key, from, to) = (key.to_owned(), from.to_owned(), to.to_owned());
    let comment = message.unwrap_or_default().to_owned();
    let what = if with_segments {
        "Promote the flag and its segments"
    } else {
        "Promote the flag"
    };
    let response = session
        .write_in(&to, what, |mut admin, confirm_protected| {
            let request = pb::PromoteFlagRequest {
                environment: to.clone(),
                from_environment: from.clone(),
                key: key.clone(),
                comment: comment.clone(),
                confirm_protected,
                with_segments,
                ..Default::default()
            };
            async move { admin.promote_flag(request).await }
        })
        .await?;
    let segments: Vec<&str> = response
        .segments
        .iter()
        .filter_map(|s| s.segment.as_ref())
        .map(|s| s.key.as_str())
        .collect();
    let along = match segments.as_slice() {
        [] => String::new(),
        [one] => format!(" with segment {one}"),
        many => format!(" with segments {}", many.join(", ")),
    };
    Ok(format!(
        "{key} copied from {from} to {to}{along} (revision {} of {to})\n",
        response.revision
    ))
}
