//! Repository URL normalization, so `git@github.com:org/repo.git`,
//! `https://github.com/org/repo` and `ssh://git@github.com/org/repo.git`
//! all name the same repository.

/// A repository identity: lower-case host and path without `.git`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RepoKey {
    /// Host name without user or port.
    pub host: String,
    /// Path without leading/trailing `/` and without `.git`.
    pub path: String,
}

/// Normalize any Git URL form; `None` when no host or path can be found.
///
/// The port is dropped because forges serve SSH and HTTPS for one repository
/// on different ports (GitLab `ssh://git@gitlab:2222/g/r.git` and
/// `https://gitlab/g/r.git`). The path is compared case-insensitively because
/// GitHub, GitLab and Gitea resolve owner and repository names that way; a
/// false match only costs one extra sync, a missed one delays a migration.
pub fn normalize(url: &str) -> Option<RepoKey> {
    let url = url.trim();
    let (authority, path) = if let Some((_, rest)) = url.split_once("://") {
        rest.split_once('/').unwrap_or((rest, ""))
    } else {
        // scp-like `user@host:path`, or `user@host/path` as Gogs writes its ssh_url.
        let slash = url.find('/').unwrap_or(url.len());
        match url[..slash].find(':') {
            Some(colon) => (&url[..colon], &url[colon + 1..]),
            None => (&url[..slash], url.get(slash + 1..).unwrap_or("")),
        }
    };
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if host.starts_with('[') {
        // IPv6 literal: keep the brackets' content, drop a port after them.
        host.split_once(']').map_or(host, |(h, _)| h).trim_start_matches('[')
    } else {
        host.split_once(':').map_or(host, |(h, _)| h)
    };
    let path = path.trim_matches('/');
    let path = path.strip_suffix(".git").unwrap_or(path).trim_end_matches('/');
    if host.is_empty() || path.is_empty() {
        return None;
    }
    Some(RepoKey { host: host.to_ascii_lowercase(), path: path.to_lowercase() })
}

/// Whether two URLs name the same repository.
pub fn same_repo(a: &str, b: &str) -> bool {
    match (normalize(a), normalize(b)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_usual_forms_are_one_repo() {
        let forms = [
            "git@github.com:org/repo.git",
            "https://github.com/org/repo",
            "https://GitHub.com/org/repo.git",
            "ssh://git@github.com/org/repo.git",
            "ssh://git@github.com:22/org/repo.git/",
            "http://user:token@github.com/Org/Repo",
            "git://github.com/org/repo.git",
        ];
        for f in forms {
            assert_eq!(normalize(f), Some(RepoKey { host: "github.com".into(), path: "org/repo".into() }), "{f}");
        }
    }

    #[test]
    fn different_repos_differ() {
        assert!(!same_repo("git@github.com:org/repo.git", "git@github.com:org/repo2.git"));
        assert!(!same_repo("git@github.com:org/repo.git", "git@gitlab.com:org/repo.git"));
        assert!(!same_repo("https://github.com/org/repo", "https://github.com/other/repo"));
        assert!(!same_repo("", "https://github.com/org/repo"));
        assert!(!same_repo("https://github.com/", "https://github.com/"));
    }

    #[test]
    fn gogs_and_gitlab_forms() {
        assert_eq!(normalize("git@gogs-server/repo-test.git").unwrap().host, "gogs-server");
        assert!(same_repo("ssh://git@gitlab:2222/group/name.git", "https://gitlab/group/name.git"));
        assert_eq!(normalize("ssh://git@[::1]:2222/g/r.git").unwrap().host, "::1");
    }
}
