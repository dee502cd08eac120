//! The loader sees every change to the files it reads, whether a file changed, appeared or
//! went away, while keeping what it parsed of the others.

use microseg_policy::Loader;

fn policy(name: &str, priority: u32) -> String {
    format!("apiVersion: microseg.io/v1\nkind: Policy\nmetadata: {{name: {name}}}\nspec:\n  selector: {{}}\n  priority: {priority}\n  ingress: []\n")
}

#[test]
fn reloads_follow_changed_added_and_removed_files() {
    let dir = std::env::temp_dir().join(format!("mseg-loader-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("a.yaml"), policy("a", 10)).unwrap();
    std::fs::write(dir.join("b.yaml"), policy("b", 20)).unwrap();
    let mut loader = Loader::default();
    let set = loader.load(&[&dir]).unwrap();
    assert_eq!(set.policies.len(), 2);

    // A change of size is seen even within the file system's timestamp granularity.
    std::fs::write(dir.join("b.yaml"), policy("b", 2000)).unwrap();
    std::fs::write(dir.join("c.yaml"), policy("c", 30)).unwrap();
    let set = loader.load(&[&dir]).unwrap();
    let b = set.policy("b").expect("b");
    assert_eq!(b.priority, 2000);
    assert!(set.policy("c").is_some());

    std::fs::remove_file(dir.join("a.yaml")).unwrap();
    std::fs::write(dir.join("c.yaml"), "kind: Nonsense\n").unwrap();
    let errors = loader.load(&[&dir]).unwrap_err();
    assert!(
        errors.iter().any(|d| d.file.ends_with("c.yaml")),
        "{errors:?}"
    );
    std::fs::write(dir.join("c.yaml"), policy("c", 31)).unwrap();
    let set = loader.load(&[&dir]).unwrap();
    let names: Vec<&str> = set.policies.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["b", "c"]);
    let _ = std::fs::remove_dir_all(&dir);
}
