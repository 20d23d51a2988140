//! Pull/merge request numbers from merge commit messages.
//!
//! Forges write the number into the commit message in their own style; this
//! is the only link from a placement commit back to its review.

/// The pull/merge request number a commit message refers to, if any.
///
/// Recognised, first line of the message:
/// - GitHub merge: `Merge pull request #12 from org/branch`
/// - Bitbucket: `Merged in feature (pull request #12)` or `Pull request #12: Title`
/// - Azure DevOps: `Merged PR 12: Title`
/// - GitHub/Gitea/Gogs squash: `Title (#12)`
///
/// and anywhere in the message:
/// - GitLab: `See merge request group/project!12`
pub fn pr_number(message: &str) -> Option<u64> {
    let subject = message.lines().next().unwrap_or("").trim();
    for prefix in ["Merge pull request #", "Pull request #", "Merged PR "] {
        if let Some(rest) = subject.strip_prefix(prefix) {
            if let Some(n) = leading_number(rest) {
                return Some(n);
            }
        }
    }
    if let Some(idx) = subject.find("(pull request #") {
        if let Some(n) = leading_number(&subject[idx + "(pull request #".len()..]) {
            return Some(n);
        }
    }
    for line in message.lines() {
        if let Some(rest) = line.trim().strip_prefix("See merge request ") {
            if let Some((_, num)) = rest.rsplit_once('!') {
                if let Some(n) = leading_number(num) {
                    return Some(n);
                }
            }
        }
    }
    // Squash style: the subject ends with ` (#12)`.
    if let Some(inner) = subject.strip_suffix(')') {
        if let Some(idx) = inner.rfind("(#") {
            let digits = &inner[idx + 2..];
            if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
                return digits.parse().ok();
            }
        }
    }
    None
}

fn leading_number(s: &str) -> Option<u64> {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    if end == 0 {
        None
    } else {
        s[..end].parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::pr_number;

    #[test]
    fn forge_styles() {
        assert_eq!(
            pr_number("Merge pull request #12 from acme/move-shop\n\nMove shop to west"),
            Some(12)
        );
        assert_eq!(
            pr_number(
                "Merge branch 'move-shop' into 'main'\n\nMove shop\n\nSee merge request platform/placements!345"
            ),
            Some(345)
        );
        assert_eq!(
            pr_number("Pull request #7: Move shop to west\n\nMerge in PLAT/placements from move"),
            Some(7)
        );
        assert_eq!(
            pr_number("Merged in move-shop (pull request #8)\n\nMove shop"),
            Some(8)
        );
        assert_eq!(pr_number("Merged PR 99: Move shop"), Some(99));
        assert_eq!(
            pr_number("Move shop to west (#1234)\n\nSigned-off-by: a <a@b>"),
            Some(1234)
        );
    }

    #[test]
    fn not_a_pr() {
        assert_eq!(pr_number("Move shop to west"), None);
        assert_eq!(pr_number("Fix issue #12 in docs"), None);
        assert_eq!(pr_number("Bump (#abc)"), None);
        assert_eq!(pr_number("Merge pull request #x from a/b"), None);
        assert_eq!(pr_number(""), None);
    }
}
