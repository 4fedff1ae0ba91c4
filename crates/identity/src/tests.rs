//! Tests of the whole crate through its API: IAM and STS calls as XML, credentials, authorisation.

use quick_xml::Reader;
use quick_xml::events::Event;
use tempfile::TempDir;

use super::*;

const ACCT: &str = "123456789012";
const NOW: u64 = 1_800_000_000; // 2027-01-15T08:00:00Z
const ADMIN_KEY: &str = "AKIAQUARTERSADMIN001";
const ADMIN_SECRET: &str = "admin/secret/key/0123456789abcdefghijklm";

const TRUST_ACCOUNT_WITH_TAGS: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow",
    "Principal":{"AWS":"arn:aws:iam::123456789012:root"},"Action":["sts:AssumeRole","sts:TagSession"]}]}"#;
const TRUST_ACCOUNT_NO_TAGS: &str = r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow",
    "Principal":{"AWS":"123456789012"},"Action":"sts:AssumeRole"}}"#;
const TRUST_LAMBDA: &str = r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow",
    "Principal":{"Service":"lambda.amazonaws.com"},"Action":"sts:AssumeRole"}}"#;
const TENANT_POLICY: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject",
    "Resource":"arn:aws:s3:::tenant-data/${aws:PrincipalTag/TenantId}/*"}]}"#;

fn open(dir: &TempDir) -> Identity {
    let mut id = Identity::open(dir.path().join("identity.db"), [42; 32], ACCT).expect("open store");
    id.set_admin(ADMIN_KEY, ADMIN_SECRET);
    id
}

fn setup() -> (TempDir, Identity) {
    let dir = TempDir::new().expect("temp dir");
    let id = open(&dir);
    (dir, id)
}

fn admin() -> Principal {
    Principal::Admin { access_key: ADMIN_KEY.into() }
}

fn form(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

// ---- A minimal XML tree, read with quick-xml ----

#[derive(Debug, Default)]
struct Node {
    name: String,
    attrs: Vec<(String, String)>,
    text: String,
    children: Vec<Node>,
}

impl Node {
    /// The descendant at a `/`-separated path of element names (the first of each name).
    fn at(&self, path: &str) -> &Node {
        path.split('/').fold(self, |node, name| {
            node.children
                .iter()
                .find(|c| c.name == name)
                .unwrap_or_else(|| panic!("no <{name}> under <{}> in path {path}", node.name))
        })
    }

    fn text(&self, path: &str) -> &str {
        &self.at(path).text
    }

    fn has(&self, name: &str) -> bool {
        self.children.iter().any(|c| c.name == name)
    }

    fn names(&self) -> Vec<&str> {
        self.children.iter().map(|c| c.name.as_str()).collect()
    }
}

fn parse_xml(xml: &str) -> Node {
    let mut reader = Reader::from_str(xml);
    let mut stack = vec![Node::default()];
    let element = |e: &quick_xml::events::BytesStart<'_>| Node {
        name: String::from_utf8(e.name().as_ref().to_vec()).expect("utf-8 name"),
        attrs: e
            .attributes()
            .map(|a| {
                let a = a.expect("attribute");
                (
                    String::from_utf8(a.key.as_ref().to_vec()).expect("utf-8"),
                    String::from_utf8(a.value.to_vec()).expect("utf-8"),
                )
            })
            .collect(),
        ..Node::default()
    };
    loop {
        match reader.read_event().expect("well-formed XML") {
            Event::Start(e) => stack.push(element(&e)),
            Event::Empty(e) => stack.last_mut().expect("parent").children.push(element(&e)),
            Event::End(_) => {
                let node = stack.pop().expect("open element");
                stack.last_mut().expect("parent").children.push(node);
            }
            Event::Text(t) => stack.last_mut().expect("node").text.push_str(&t.xml10_content().expect("text")),
            Event::GeneralRef(r) => {
                let text = if r.is_char_ref() {
                    r.resolve_char_ref().expect("char ref").expect("a character").to_string()
                } else {
                    let name = r.decode().expect("entity name");
                    quick_xml::escape::resolve_predefined_entity(&name).expect("predefined entity").to_owned()
                };
                stack.last_mut().expect("node").text.push_str(&text);
            }
            Event::Eof => break,
            other => panic!("unexpected XML event {other:?}"),
        }
    }
    let mut root = stack.pop().expect("document");
    assert!(stack.is_empty(), "unclosed elements");
    assert_eq!(root.children.len(), 1, "one root element");
    root.children.remove(0)
}

fn url_decode(s: &str) -> String {
    let pairs = parse_form(format!("x={}", s.replace('+', "%2B")).as_bytes()).expect("percent-encoded");
    pairs[0].1.clone()
}

/// Calls the API and parses the XML; checks the envelope of a success or of an error.
fn call(id: &Identity, service: &str, caller: &Principal, pairs: &[(&str, &str)]) -> (u16, Node) {
    let (status, xml) = id.handle(service, caller, &form(pairs), "req-0001", NOW);
    let doc = parse_xml(&xml);
    let ns = if service == "sts" { STS_NS } else { IAM_NS };
    assert_eq!(doc.attrs, vec![("xmlns".to_owned(), ns.to_owned())], "{xml}");
    if status == 200 {
        let action = pairs.iter().find(|(k, _)| *k == "Action").map(|(_, v)| *v).expect("action");
        assert_eq!(doc.name, format!("{action}Response"), "{xml}");
        assert_eq!(doc.text("ResponseMetadata/RequestId"), "req-0001");
    } else {
        assert_eq!(doc.name, "ErrorResponse", "{xml}");
        assert_eq!(doc.names(), ["Error", "RequestId"]);
        assert_eq!(doc.at("Error").names(), ["Type", "Code", "Message"]);
        assert_eq!(doc.text("RequestId"), "req-0001");
        assert_eq!(doc.text("Error/Type"), if status >= 500 { "Receiver" } else { "Sender" });
    }
    (status, doc)
}

fn error_code(doc: &Node) -> &str {
    doc.text("Error/Code")
}

fn create_role(id: &Identity, name: &str, trust: &str) -> Role {
    id.create_role(&NewRole { name, trust_policy: trust, ..NewRole::default() }, NOW).expect("create role")
}

fn role_arn(name: &str) -> String {
    format!("arn:aws:iam::{ACCT}:role/{name}")
}

fn assume(id: &Identity, caller: &Principal, extra: &[(&str, &str)]) -> (u16, Node) {
    let mut pairs = vec![("Action", "AssumeRole"), ("Version", "2011-06-15")];
    pairs.extend_from_slice(extra);
    call(id, "sts", caller, &pairs)
}

/// The principal of credentials in an `AssumeRole` response.
fn principal_of(id: &Identity, doc: &Node, now: u64) -> Result<Principal, IdentityError> {
    let c = doc.at("AssumeRoleResult/Credentials");
    id.principal(c.text("AccessKeyId"), Some(c.text("SessionToken")), now)
}

fn session(p: &Principal) -> &Session {
    match p {
        Principal::Session(s) => s,
        Principal::Admin { .. } => panic!("expected a session"),
    }
}

// ---- IAM ----

#[test]
fn create_role_returns_the_role_with_the_policy_url_encoded() {
    let (_dir, id) = setup();
    let (status, doc) = call(
        &id,
        "iam",
        &admin(),
        &[
            ("Action", "CreateRole"),
            ("Version", "2010-05-08"),
            ("RoleName", "tenant-role"),
            ("Path", "/tenants/"),
            ("AssumeRolePolicyDocument", TRUST_ACCOUNT_WITH_TAGS),
            ("Description", "Tenant <data> & \"more\""),
            ("MaxSessionDuration", "7200"),
            ("Tags.member.1.Key", "team"),
            ("Tags.member.1.Value", "platform"),
        ],
    );
    assert_eq!(status, 200);
    let role = doc.at("CreateRoleResult/Role");
    assert_eq!(
        role.names(),
        [
            "Path",
            "RoleName",
            "RoleId",
            "Arn",
            "CreateDate",
            "AssumeRolePolicyDocument",
            "Description",
            "MaxSessionDuration",
            "Tags"
        ]
    );
    assert_eq!(role.text("Path"), "/tenants/");
    assert_eq!(role.text("RoleName"), "tenant-role");
    assert_eq!(role.text("Arn"), "arn:aws:iam::123456789012:role/tenants/tenant-role");
    assert!(role.text("RoleId").starts_with("AROA") && role.text("RoleId").len() == 21);
    assert_eq!(role.text("CreateDate"), "2027-01-15T08:00:00Z");
    assert_eq!(role.text("Description"), "Tenant <data> & \"more\"");
    assert_eq!(role.text("MaxSessionDuration"), "7200");
    assert_eq!(role.text("Tags/member/Key"), "team");
    assert_eq!(role.text("Tags/member/Value"), "platform");
    let encoded = role.text("AssumeRolePolicyDocument");
    assert!(encoded.starts_with("%7B%22Version%22%3A%222012-10-17%22"), "{encoded}");
    assert_eq!(url_decode(encoded), TRUST_ACCOUNT_WITH_TAGS);

    // GetRole returns the same role; names are case-insensitive.
    let (status, doc) = call(&id, "iam", &admin(), &[("Action", "GetRole"), ("RoleName", "TENANT-ROLE")]);
    assert_eq!(status, 200);
    assert_eq!(doc.text("GetRoleResult/Role/RoleId"), role.text("RoleId"));
    assert_eq!(doc.text("GetRoleResult/Role/RoleName"), "tenant-role");
    assert_eq!(url_decode(doc.text("GetRoleResult/Role/AssumeRolePolicyDocument")), TRUST_ACCOUNT_WITH_TAGS);
}

#[test]
fn create_role_errors() {
    let (_dir, id) = setup();
    let create = |name: &str, doc: &str| {
        call(&id, "iam", &admin(), &[("Action", "CreateRole"), ("RoleName", name), ("AssumeRolePolicyDocument", doc)])
    };
    assert_eq!(create("r", TRUST_LAMBDA).0, 200);

    let (status, doc) = create("R", TRUST_LAMBDA);
    assert_eq!((status, error_code(&doc)), (409, "EntityAlreadyExists"));
    assert_eq!(doc.text("Error/Message"), "Role with name R already exists.");

    // An identity policy (with Resource, without Principal) is not a trust policy.
    let (status, doc) = create("other", TENANT_POLICY);
    assert_eq!((status, error_code(&doc)), (400, "MalformedPolicyDocument"));
    let (status, doc) = create("other", "{not json");
    assert_eq!((status, error_code(&doc)), (400, "MalformedPolicyDocument"));

    let (status, doc) = create("bad/name", TRUST_LAMBDA);
    assert_eq!((status, error_code(&doc)), (400, "ValidationError"));
    assert!(doc.text("Error/Message").contains("at 'roleName' failed to satisfy constraint"), "{:?}", doc);

    let (status, doc) = call(&id, "iam", &admin(), &[("Action", "CreateRole")]);
    assert_eq!((status, error_code(&doc)), (400, "ValidationError"));
    assert!(doc.text("Error/Message").starts_with("2 validation errors detected: Value null at 'roleName'"));

    for (param, value) in [("MaxSessionDuration", "3599"), ("MaxSessionDuration", "43201"), ("Path", "no-slash")] {
        let (status, doc) = call(
            &id,
            "iam",
            &admin(),
            &[("Action", "CreateRole"), ("RoleName", "x"), ("AssumeRolePolicyDocument", TRUST_LAMBDA), (param, value)],
        );
        assert_eq!((status, error_code(&doc)), (400, "ValidationError"), "{param}={value}");
    }
    let (status, doc) = call(
        &id,
        "iam",
        &admin(),
        &[
            ("Action", "CreateRole"),
            ("RoleName", "x"),
            ("AssumeRolePolicyDocument", TRUST_LAMBDA),
            ("PermissionsBoundary", "arn:aws:iam::123456789012:policy/b"),
        ],
    );
    assert_eq!((status, error_code(&doc)), (400, "InvalidInput"));
}

#[test]
fn role_lifecycle_and_inline_policies() {
    let (_dir, id) = setup();
    create_role(&id, "worker", TRUST_LAMBDA);
    let put = |name: &str, doc: &str| {
        call(
            &id,
            "iam",
            &admin(),
            &[("Action", "PutRolePolicy"), ("RoleName", "worker"), ("PolicyName", name), ("PolicyDocument", doc)],
        )
    };
    let (status, doc) = put("tenant-data", TENANT_POLICY);
    assert_eq!(status, 200);
    assert!(!doc.has("PutRolePolicyResult"), "no result element for an action without output");

    // A trust policy is not an identity policy.
    let (status, doc) = put("bad", TRUST_LAMBDA);
    assert_eq!((status, error_code(&doc)), (400, "MalformedPolicyDocument"));

    let (status, doc) = call(
        &id,
        "iam",
        &admin(),
        &[("Action", "GetRolePolicy"), ("RoleName", "worker"), ("PolicyName", "tenant-data")],
    );
    assert_eq!(status, 200);
    assert_eq!(doc.at("GetRolePolicyResult").names(), ["RoleName", "PolicyName", "PolicyDocument"]);
    assert_eq!(url_decode(doc.text("GetRolePolicyResult/PolicyDocument")), TENANT_POLICY);

    let (status, doc) =
        call(&id, "iam", &admin(), &[("Action", "GetRolePolicy"), ("RoleName", "worker"), ("PolicyName", "nope")]);
    assert_eq!((status, error_code(&doc)), (404, "NoSuchEntity"));
    assert_eq!(doc.text("Error/Message"), "The role policy with name nope cannot be found.");

    assert_eq!(put("second", TENANT_POLICY).0, 200);
    let (status, doc) = call(&id, "iam", &admin(), &[("Action", "ListRolePolicies"), ("RoleName", "worker")]);
    assert_eq!(status, 200);
    let names: Vec<&str> =
        doc.at("ListRolePoliciesResult/PolicyNames").children.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(names, ["second", "tenant-data"]);
    assert_eq!(doc.text("ListRolePoliciesResult/IsTruncated"), "false");
    let (_, doc) =
        call(&id, "iam", &admin(), &[("Action", "ListRolePolicies"), ("RoleName", "worker"), ("MaxItems", "1")]);
    assert_eq!(doc.text("ListRolePoliciesResult/IsTruncated"), "true");
    assert_eq!(doc.text("ListRolePoliciesResult/Marker"), "tenant-data");
    let (_, doc) = call(
        &id,
        "iam",
        &admin(),
        &[("Action", "ListRolePolicies"), ("RoleName", "worker"), ("Marker", "tenant-data")],
    );
    assert_eq!(doc.text("ListRolePoliciesResult/PolicyNames/member"), "tenant-data");

    // DeleteRole refuses while policies remain.
    let (status, doc) = call(&id, "iam", &admin(), &[("Action", "DeleteRole"), ("RoleName", "worker")]);
    assert_eq!((status, error_code(&doc)), (409, "DeleteConflict"));
    for name in ["second", "TENANT-DATA"] {
        let (status, _) =
            call(&id, "iam", &admin(), &[("Action", "DeleteRolePolicy"), ("RoleName", "worker"), ("PolicyName", name)]);
        assert_eq!(status, 200, "{name}");
    }
    let (status, doc) =
        call(&id, "iam", &admin(), &[("Action", "DeleteRolePolicy"), ("RoleName", "worker"), ("PolicyName", "second")]);
    assert_eq!((status, error_code(&doc)), (404, "NoSuchEntity"));
    assert_eq!(call(&id, "iam", &admin(), &[("Action", "DeleteRole"), ("RoleName", "worker")]).0, 200);
    let (status, doc) = call(&id, "iam", &admin(), &[("Action", "GetRole"), ("RoleName", "worker")]);
    assert_eq!((status, error_code(&doc)), (404, "NoSuchEntity"));
    assert_eq!(doc.text("Error/Message"), "The role with name worker cannot be found.");
    let (status, doc) = call(
        &id,
        "iam",
        &admin(),
        &[("Action", "PutRolePolicy"), ("RoleName", "worker"), ("PolicyName", "p"), ("PolicyDocument", TENANT_POLICY)],
    );
    assert_eq!((status, error_code(&doc)), (404, "NoSuchEntity"));
}

#[test]
fn role_policies_have_an_aggregate_size_limit() {
    let (_dir, id) = setup();
    create_role(&id, "big", TRUST_LAMBDA);
    let statement = r#"{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/*"}"#;
    let doc = |n: usize| format!(r#"{{"Version":"2012-10-17","Statement":[{}]}}"#, vec![statement; n].join(","));
    id.put_role_policy("big", "one", &doc(100)).expect("about 7 KB");
    // Replacing a policy counts only its new size.
    id.put_role_policy("big", "one", &doc(100)).expect("replacement");
    let err = id.put_role_policy("big", "two", &doc(50)).expect_err("over 10240 together");
    assert_eq!((err.aws_code(), err.http_status()), ("LimitExceeded", 409));
}

#[test]
fn list_roles_filters_by_path_and_pages() {
    let (_dir, id) = setup();
    for (name, path) in [("a", "/"), ("B", "/tenants/"), ("c", "/tenants/"), ("d", "/tenants/x/"), ("e", "/other/")] {
        id.create_role(&NewRole { name, path: Some(path), trust_policy: TRUST_LAMBDA, ..NewRole::default() }, NOW)
            .expect("create");
    }
    let list = |extra: &[(&str, &str)]| {
        let mut pairs = vec![("Action", "ListRoles")];
        pairs.extend_from_slice(extra);
        let (status, doc) = call(&id, "iam", &admin(), &pairs);
        assert_eq!(status, 200);
        let names: Vec<String> =
            doc.at("ListRolesResult/Roles").children.iter().map(|m| m.text("RoleName").to_owned()).collect();
        let marker = doc.at("ListRolesResult").has("Marker").then(|| doc.text("ListRolesResult/Marker").to_owned());
        assert_eq!(doc.text("ListRolesResult/IsTruncated"), if marker.is_some() { "true" } else { "false" });
        (names, marker)
    };
    assert_eq!(list(&[]).0, ["a", "B", "c", "d", "e"]);
    assert_eq!(list(&[("PathPrefix", "/tenants/")]).0, ["B", "c", "d"]);
    let (page, marker) = list(&[("PathPrefix", "/tenants/"), ("MaxItems", "2")]);
    assert_eq!(page, ["B", "c"]);
    let marker = marker.expect("truncated");
    let (page, marker) = list(&[("PathPrefix", "/tenants/"), ("MaxItems", "2"), ("Marker", &marker)]);
    assert_eq!((page, marker), (vec!["d".to_owned()], None));
    // ListRoles leaves out tags and the role list members carry every other field.
    let (_, doc) = call(&id, "iam", &admin(), &[("Action", "ListRoles"), ("MaxItems", "1")]);
    assert_eq!(
        doc.at("ListRolesResult/Roles/member").names(),
        ["Path", "RoleName", "RoleId", "Arn", "CreateDate", "AssumeRolePolicyDocument", "MaxSessionDuration"]
    );
    let (status, doc) = call(&id, "iam", &admin(), &[("Action", "ListRoles"), ("MaxItems", "0")]);
    assert_eq!((status, error_code(&doc)), (400, "ValidationError"));
}

#[test]
fn request_envelope_errors() {
    let (_dir, id) = setup();
    let (status, doc) = call(&id, "iam", &admin(), &[("Version", "2010-05-08")]);
    assert_eq!((status, error_code(&doc)), (400, "MissingAction"));
    let (status, doc) = call(&id, "iam", &admin(), &[("Action", "CreateUser"), ("Version", "2010-05-08")]);
    assert_eq!((status, error_code(&doc)), (400, "InvalidAction"));
    assert_eq!(doc.text("Error/Message"), "Could not find operation CreateUser for version 2010-05-08");
    let (status, doc) = call(&id, "sts", &admin(), &[("Action", "GetCallerIdentity"), ("Version", "2010-05-08")]);
    assert_eq!((status, error_code(&doc)), (400, "InvalidAction"));
    let (status, doc) = call(&id, "sts", &admin(), &[("Action", "GetRole"), ("RoleName", "x")]);
    assert_eq!((status, error_code(&doc)), (400, "InvalidAction"), "IAM actions are not STS actions");
    let (status, doc) = call(&id, "iam", &admin(), &[("Action", "GetRole"), ("RoleName", "a"), ("RoleName", "b")]);
    assert_eq!((status, error_code(&doc)), (400, "MalformedQueryString"));
    // Hostile input in a message stays well-formed XML (`call` parses it).
    let (status, doc) = call(&id, "iam", &admin(), &[("Action", "<x>&\u{1}]]>")]);
    assert_eq!((status, error_code(&doc)), (400, "InvalidAction"));
    assert!(doc.text("Error/Message").contains("<x>&\u{FFFD}]]>"));
}

// ---- STS ----

#[test]
fn assume_role_returns_working_credentials() {
    let (_dir, id) = setup();
    let role = create_role(&id, "tenant-role", TRUST_ACCOUNT_WITH_TAGS);
    let arn = role_arn("tenant-role");
    let (status, doc) = assume(
        &id,
        &admin(),
        &[
            ("RoleArn", &arn),
            ("RoleSessionName", "blue-session"),
            ("DurationSeconds", "900"),
            ("Tags.member.1.Key", "TenantId"),
            ("Tags.member.1.Value", "blue"),
            ("TransitiveTagKeys.member.1", "TenantId"),
        ],
    );
    assert_eq!(status, 200);
    let result = doc.at("AssumeRoleResult");
    assert_eq!(result.names(), ["Credentials", "AssumedRoleUser", "PackedPolicySize"]);
    let creds = result.at("Credentials");
    assert_eq!(creds.names(), ["AccessKeyId", "SecretAccessKey", "SessionToken", "Expiration"]);
    let key = creds.text("AccessKeyId");
    assert!(key.starts_with("ASIA") && key.len() == 20, "{key}");
    assert_eq!(creds.text("SecretAccessKey").len(), 40);
    assert_eq!(creds.text("Expiration"), "2027-01-15T08:15:00Z");
    assert_eq!(result.text("AssumedRoleUser/AssumedRoleId"), format!("{}:blue-session", role.role_id));
    assert_eq!(result.text("AssumedRoleUser/Arn"), "arn:aws:sts::123456789012:assumed-role/tenant-role/blue-session");
    assert_eq!(result.text("PackedPolicySize"), "1");

    // The credentials verify without any state: the secret is derivable, the token self-contained.
    assert_eq!(id.secret_for(key).as_deref(), Some(creds.text("SecretAccessKey")));
    let p = principal_of(&id, &doc, NOW + 10).expect("valid session");
    let s = session(&p);
    assert_eq!(s.role_arn, arn);
    assert_eq!(s.role_name, "tenant-role");
    assert_eq!(s.session_name, "blue-session");
    assert_eq!(s.tags, [("TenantId".to_owned(), "blue".to_owned())]);
    assert_eq!(s.tag("tenantid"), Some("blue"));
    assert_eq!(s.transitive, ["TenantId"]);
    assert_eq!((s.issued, s.expires), (NOW, NOW + 900));

    let (status, doc) = call(&id, "sts", &p, &[("Action", "GetCallerIdentity"), ("Version", "2011-06-15")]);
    assert_eq!(status, 200);
    let who = doc.at("GetCallerIdentityResult");
    assert_eq!(who.names(), ["UserId", "Account", "Arn"]);
    assert_eq!(who.text("UserId"), format!("{}:blue-session", role.role_id));
    assert_eq!(who.text("Account"), ACCT);
    assert_eq!(who.text("Arn"), "arn:aws:sts::123456789012:assumed-role/tenant-role/blue-session");

    let (_, doc) = call(&id, "sts", &admin(), &[("Action", "GetCallerIdentity")]);
    assert_eq!(doc.text("GetCallerIdentityResult/Arn"), "arn:aws:iam::123456789012:root");
    assert_eq!(doc.text("GetCallerIdentityResult/UserId"), ACCT);
}

#[test]
fn assume_role_defaults_and_duration_limits() {
    let (_dir, id) = setup();
    create_role(&id, "r", TRUST_ACCOUNT_NO_TAGS);
    id.create_role(
        &NewRole {
            name: "long",
            trust_policy: TRUST_ACCOUNT_NO_TAGS,
            max_session_duration: Some(43_200),
            ..NewRole::default()
        },
        NOW,
    )
    .expect("create");
    let (status, doc) = assume(&id, &admin(), &[("RoleArn", &role_arn("r")), ("RoleSessionName", "s1")]);
    assert_eq!(status, 200);
    assert_eq!(doc.text("AssumeRoleResult/Credentials/Expiration"), "2027-01-15T09:00:00Z", "default one hour");
    assert_eq!(doc.text("AssumeRoleResult/PackedPolicySize"), "0");

    let (status, doc) =
        assume(&id, &admin(), &[("RoleArn", &role_arn("r")), ("RoleSessionName", "s1"), ("DurationSeconds", "3601")]);
    assert_eq!((status, error_code(&doc)), (400, "ValidationError"));
    assert_eq!(
        doc.text("Error/Message"),
        "The requested DurationSeconds exceeds the MaxSessionDuration set for this role."
    );
    let (status, _) = assume(
        &id,
        &admin(),
        &[("RoleArn", &role_arn("long")), ("RoleSessionName", "s1"), ("DurationSeconds", "43200")],
    );
    assert_eq!(status, 200);
    for (param, value) in [
        ("DurationSeconds", "899"),
        ("DurationSeconds", "43201"),
        ("DurationSeconds", "ten"),
        ("RoleSessionName", "x"),
        ("RoleSessionName", "has space"),
        ("ExternalId", "x"),
        ("SourceIdentity", "a b"),
    ] {
        let mut pairs = vec![("RoleArn", role_arn("r")), ("RoleSessionName", "s1".to_owned())];
        pairs.retain(|(k, _)| *k != param);
        pairs.push((param, value.to_owned()));
        let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (status, doc) = assume(&id, &admin(), &pairs);
        assert_eq!((status, error_code(&doc)), (400, "ValidationError"), "{param}={value}");
    }
    let (status, doc) = assume(&id, &admin(), &[]);
    assert_eq!((status, error_code(&doc)), (400, "ValidationError"));
    assert!(doc.text("Error/Message").starts_with("2 validation errors detected"));
    let (status, doc) = assume(
        &id,
        &admin(),
        &[
            ("RoleArn", &role_arn("r")),
            ("RoleSessionName", "s1"),
            ("PolicyArns.member.1.arn", "arn:aws:iam::aws:policy/x"),
        ],
    );
    assert_eq!((status, error_code(&doc)), (400, "InvalidInput"), "managed session policies are refused, not ignored");
}

#[test]
fn trust_policy_must_allow_tag_session_for_tags() {
    let (_dir, id) = setup();
    create_role(&id, "no-tags", TRUST_ACCOUNT_NO_TAGS);
    create_role(&id, "tags", TRUST_ACCOUNT_WITH_TAGS);
    let tagged = |role: &str| {
        assume(
            &id,
            &admin(),
            &[
                ("RoleArn", &role_arn(role)),
                ("RoleSessionName", "s1"),
                ("Tags.member.1.Key", "TenantId"),
                ("Tags.member.1.Value", "blue"),
            ],
        )
    };
    assert_eq!(assume(&id, &admin(), &[("RoleArn", &role_arn("no-tags")), ("RoleSessionName", "s1")]).0, 200);
    let (status, doc) = tagged("no-tags");
    assert_eq!((status, error_code(&doc)), (403, "AccessDenied"));
    assert_eq!(
        doc.text("Error/Message"),
        "User: arn:aws:iam::123456789012:root is not authorized to perform: sts:TagSession on resource: \
         arn:aws:iam::123456789012:role/no-tags"
    );
    assert_eq!(tagged("tags").0, 200);
}

#[test]
fn trust_policy_conditions_see_the_request() {
    let (_dir, id) = setup();
    let trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"123456789012"},
        "Action":["sts:AssumeRole","sts:TagSession"],
        "Condition":{"StringEquals":{"sts:ExternalId":"ext-123"},
                     "StringLike":{"aws:RequestTag/TenantId":"tenant-*"},
                     "ForAllValues:StringEquals":{"aws:TagKeys":["TenantId"]}}}]}"#;
    create_role(&id, "cond", trust);
    let arn = role_arn("cond");
    let try_assume = |external: &str, tenant: &str, extra_tag: bool| {
        let mut pairs = vec![
            ("RoleArn", arn.as_str()),
            ("RoleSessionName", "s1"),
            ("ExternalId", external),
            ("Tags.member.1.Key", "TenantId"),
            ("Tags.member.1.Value", tenant),
        ];
        if extra_tag {
            pairs.extend([("Tags.member.2.Key", "Admin"), ("Tags.member.2.Value", "true")]);
        }
        assume(&id, &admin(), &pairs).0
    };
    assert_eq!(try_assume("ext-123", "tenant-blue", false), 200);
    assert_eq!(try_assume("ext-999", "tenant-blue", false), 403, "wrong external id");
    assert_eq!(try_assume("ext-123", "blue", false), 403, "request tag fails StringLike");
    assert_eq!(try_assume("ext-123", "tenant-blue", true), 403, "a tag key outside the allowed set");
}

#[test]
fn assume_role_denies_unknown_and_untrusting_roles() {
    let (_dir, id) = setup();
    create_role(&id, "lambda-only", TRUST_LAMBDA);
    id.create_role(
        &NewRole { name: "pathed", path: Some("/p/"), trust_policy: TRUST_ACCOUNT_NO_TAGS, ..NewRole::default() },
        NOW,
    )
    .expect("create");
    for arn in [
        role_arn("lambda-only"),
        role_arn("missing"),
        role_arn("pathed"), // the ARN must carry the role's path
        "arn:aws:iam::999999999999:role/pathed".to_owned(),
        "arn:aws:iam::123456789012:user/pathed".to_owned(),
    ] {
        let (status, doc) = assume(&id, &admin(), &[("RoleArn", &arn), ("RoleSessionName", "s1")]);
        assert_eq!((status, error_code(&doc)), (403, "AccessDenied"), "{arn}");
    }
    let (status, _) =
        assume(&id, &admin(), &[("RoleArn", "arn:aws:iam::123456789012:role/p/pathed"), ("RoleSessionName", "s1")]);
    assert_eq!(status, 200);
}

#[test]
fn session_tag_rules() {
    let (_dir, id) = setup();
    create_role(&id, "r", TRUST_ACCOUNT_WITH_TAGS);
    let arn = role_arn("r");
    let base = [("RoleArn", arn.as_str()), ("RoleSessionName", "s1")];
    let with = |extra: &[(&str, &str)]| {
        let mut pairs = base.to_vec();
        pairs.extend_from_slice(extra);
        let (status, doc) = assume(&id, &admin(), &pairs);
        (status, if status == 200 { String::new() } else { error_code(&doc).to_owned() })
    };
    let dup = [
        ("Tags.member.1.Key", "Team"),
        ("Tags.member.1.Value", "a"),
        ("Tags.member.2.Key", "team"),
        ("Tags.member.2.Value", "b"),
    ];
    assert_eq!(with(&dup), (400, "ValidationError".into()), "keys are case-insensitive");
    let untagged_transitive =
        [("Tags.member.1.Key", "A"), ("Tags.member.1.Value", "1"), ("TransitiveTagKeys.member.1", "B")];
    assert_eq!(with(&untagged_transitive), (400, "ValidationError".into()));
    let case_insensitive_transitive =
        [("Tags.member.1.Key", "A"), ("Tags.member.1.Value", "1"), ("TransitiveTagKeys.member.1", "a")];
    assert_eq!(with(&case_insensitive_transitive).0, 200);
    assert_eq!(with(&[("Tags.member.1.Key", "aws:x"), ("Tags.member.1.Value", "1")]), (400, "ValidationError".into()));
    assert_eq!(with(&[("Tags.member.1.Key", "k")]), (400, "ValidationError".into()), "a tag without a value");
    assert_eq!(with(&[("Tags.member.1.Key", "k"), ("Tags.member.1.Value", "")]).0, 200, "empty values are fine");

    let keys: Vec<String> = (1..=51).map(|i| format!("Tags.member.{i}.Key")).collect();
    let values: Vec<String> = (1..=51).map(|i| format!("Tags.member.{i}.Value")).collect();
    let names: Vec<String> = (1..=51).map(|i| format!("key{i}")).collect();
    let mut many: Vec<(&str, &str)> = Vec::new();
    for i in 0..51 {
        many.push((&keys[i], &names[i]));
        many.push((&values[i], "v"));
    }
    assert_eq!(with(&many), (400, "ValidationError".into()), "51 tags");
    assert_eq!(with(&many[..100]).0, 200, "50 tags");

    // Long tags blow the packed budget.
    let long_values: Vec<String> = (0..50).map(|i| format!("{i:0>256}")).collect();
    let mut big: Vec<(&str, &str)> = Vec::new();
    for i in 0..50 {
        big.push((&keys[i], &names[i]));
        big.push((&values[i], &long_values[i]));
    }
    assert_eq!(with(&big), (400, "PackedPolicyTooLarge".into()));
}

#[test]
fn session_policy_is_checked_and_intersected() {
    let (_dir, id) = setup();
    create_role(&id, "r", TRUST_ACCOUNT_NO_TAGS);
    id.put_role_policy(
        "r",
        "s3",
        r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"s3:*","Resource":"arn:aws:s3:::bucket/*"}}"#,
    )
    .expect("put");
    let arn = role_arn("r");
    let get_only = r#"{"Version":"2012-10-17","Statement":[
        {"Effect":"Allow","Action":["s3:GetObject","dynamodb:GetItem"],"Resource":"*"}]}"#;
    let (status, doc) =
        assume(&id, &admin(), &[("RoleArn", &arn), ("RoleSessionName", "narrow"), ("Policy", get_only)]);
    assert_eq!(status, 200);
    assert_ne!(doc.text("AssumeRoleResult/PackedPolicySize"), "0");
    let p = principal_of(&id, &doc, NOW).expect("session");
    assert!(session(&p).session_policy.is_some());
    assert_eq!(id.authorize(&p, "s3:GetObject", "arn:aws:s3:::bucket/k", &[]), Decision::Allow);
    assert_eq!(
        id.authorize(&p, "s3:PutObject", "arn:aws:s3:::bucket/k", &[]),
        Decision::ImplicitDeny,
        "not in the session policy"
    );
    assert_eq!(
        id.authorize(&p, "dynamodb:GetItem", "arn:aws:dynamodb:us-east-1:123456789012:table/t", &[]),
        Decision::ImplicitDeny,
        "a session policy cannot widen the role"
    );

    let deny = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"},
        {"Effect":"Deny","Action":"s3:DeleteObject","Resource":"*"}]}"#;
    let (_, doc) = assume(&id, &admin(), &[("RoleArn", &arn), ("RoleSessionName", "deny"), ("Policy", deny)]);
    let p = principal_of(&id, &doc, NOW).expect("session");
    assert_eq!(id.authorize(&p, "s3:PutObject", "arn:aws:s3:::bucket/k", &[]), Decision::Allow);
    assert_eq!(id.authorize(&p, "s3:DeleteObject", "arn:aws:s3:::bucket/k", &[]), Decision::ExplicitDeny);

    for (policy, code) in [
        (TRUST_LAMBDA, "MalformedPolicyDocument"),
        ("[]", "MalformedPolicyDocument"),
        (&*format!(r#"{{"Version":"2012-10-17","Statement":[],"Id":"{}"}}"#, "x".repeat(2048)), "ValidationError"),
    ] {
        let (status, doc) = assume(&id, &admin(), &[("RoleArn", &arn), ("RoleSessionName", "s1"), ("Policy", policy)]);
        assert_eq!((status, error_code(&doc)), (400, code), "{policy:.40}");
    }
}

// ---- Credentials ----

#[test]
fn expired_tampered_and_foreign_tokens_are_refused() {
    let (_dir, id) = setup();
    create_role(&id, "r", TRUST_ACCOUNT_WITH_TAGS);
    let creds = id.mint(&role_arn("r"), "s1", &[("TenantId".into(), "blue".into())], 900, NOW).expect("mint");
    let other = id.mint(&role_arn("r"), "s2", &[], 900, NOW).expect("mint");
    let key = creds.access_key_id.as_str();
    let token = creds.session_token.as_str();

    assert!(id.principal(key, Some(token), NOW).is_ok());
    assert!(id.principal(key, Some(token), NOW + 899).is_ok());
    assert!(matches!(id.principal(key, Some(token), NOW + 900), Err(IdentityError::ExpiredToken)));
    let expired = id.principal(key, Some(token), NOW + 10_000).expect_err("expired");
    assert_eq!((expired.aws_code(), expired.http_status()), ("ExpiredToken", 400));

    let invalid = |r: Result<Principal, IdentityError>| matches!(r, Err(IdentityError::InvalidClientTokenId));
    assert!(invalid(id.principal(key, None, NOW)), "a temporary key needs its token");
    assert!(invalid(id.principal(key, Some(""), NOW)));
    assert!(invalid(id.principal(key, Some(&other.session_token), NOW)), "a token is bound to its key");
    assert!(invalid(id.principal(&other.access_key_id, Some(token), NOW)));
    assert!(invalid(id.principal(ADMIN_KEY, Some(token), NOW)), "long-term keys take no token");
    assert!(invalid(id.principal("AKIAUNKNOWN000000000", None, NOW)));
    assert!(invalid(id.principal("ASIAAAAAAAAAAAAAAAAA", Some(token), NOW)), "a key this server did not mint");
    // Every single-character change to the token is refused (and never panics).
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    for i in (0..token.len()).step_by(7) {
        let mut bytes = token.as_bytes().to_vec();
        bytes[i] = *alphabet.iter().find(|&&c| c != bytes[i]).expect("another character");
        let forged = String::from_utf8(bytes).expect("ascii");
        assert!(invalid(id.principal(key, Some(&forged), NOW)), "changed at {i}");
    }
    assert!(invalid(id.principal(key, Some(&token[..token.len() - 1]), NOW)), "truncated");
    assert!(invalid(id.principal(key, Some(&format!("{token}A")), NOW)), "extended");

    // Another server (another master key) accepts none of it.
    let dir = TempDir::new().expect("temp dir");
    let stranger = Identity::open(dir.path().join("db"), [1; 32], ACCT).expect("open");
    assert!(stranger.secret_for(key).is_none());
    assert!(matches!(stranger.principal(key, Some(token), NOW), Err(IdentityError::InvalidClientTokenId)));
}

#[test]
fn secret_for_knows_admins_and_minted_keys_only() {
    let (_dir, id) = setup();
    create_role(&id, "r", TRUST_ACCOUNT_NO_TAGS);
    assert_eq!(id.secret_for(ADMIN_KEY).as_deref(), Some(ADMIN_SECRET));
    let creds = id.mint(&role_arn("r"), "s1", &[], 900, NOW).expect("mint");
    assert_eq!(id.secret_for(&creds.access_key_id), Some(creds.secret_access_key.clone()));
    assert!(id.secret_for("ASIAAAAAAAAAAAAAAAAA").is_none());
    assert!(id.secret_for("AKIAIOSFODNN7EXAMPLE").is_none());
    // The check characters reject all but about one in a million random ids.
    let accepted = (0..2000).filter(|_| id.secret_for(&format!("ASIA{}", token::random_chars(16))).is_some()).count();
    assert_eq!(accepted, 0);
    assert!(matches!(id.principal(ADMIN_KEY, None, NOW), Ok(Principal::Admin { .. })));
}

#[test]
fn mint_validates_its_input() {
    let (_dir, id) = setup();
    create_role(&id, "r", TRUST_LAMBDA);
    let arn = role_arn("r");
    assert_eq!(id.mint(&arn, "x", &[], 900, NOW).expect_err("short name").aws_code(), "ValidationError");
    assert_eq!(id.mint(&arn, "s1", &[], 899, NOW).expect_err("short").aws_code(), "ValidationError");
    assert_eq!(id.mint(&arn, "s1", &[], 43_201, NOW).expect_err("long").aws_code(), "ValidationError");
    let dup = [("a".to_owned(), "1".to_owned()), ("A".to_owned(), "2".to_owned())];
    assert_eq!(id.mint(&arn, "s1", &dup, 900, NOW).expect_err("dup").aws_code(), "ValidationError");
    assert_eq!(id.mint(&role_arn("nope"), "s1", &[], 900, NOW).expect_err("no role").aws_code(), "NoSuchEntity");
    // No trust check: a role only Lambda may assume can still be minted for, and beyond its MaxSessionDuration.
    let creds = id.mint(&arn, "env-1", &[], 43_200, NOW).expect("mint");
    assert_eq!(creds.expiration, NOW + 43_200);
    assert!(format!("{creds:?}").contains("<redacted>") && !format!("{creds:?}").contains(&creds.secret_access_key));
}

// ---- Authorisation ----

#[test]
fn the_talks_tenant_policy_through_authorize() {
    let (_dir, id) = setup();
    create_role(&id, "tenant-role", TRUST_LAMBDA);
    id.put_role_policy("tenant-role", "tenant-data", TENANT_POLICY).expect("put");
    let arn = role_arn("tenant-role");
    let blue = id.mint(&arn, "blue", &[("TenantId".into(), "blue".into())], 900, NOW).expect("mint");
    let p = id.principal(&blue.access_key_id, Some(&blue.session_token), NOW).expect("session");
    let get =
        |p: &Principal, key: &str| id.authorize(p, "s3:GetObject", &format!("arn:aws:s3:::tenant-data/{key}"), &[]);
    assert_eq!(get(&p, "blue/reports/1.csv"), Decision::Allow);
    assert_eq!(get(&p, "green/reports/1.csv"), Decision::ImplicitDeny);
    assert_eq!(get(&p, "blue"), Decision::ImplicitDeny, "only inside the prefix");
    assert_eq!(id.authorize(&p, "s3:PutObject", "arn:aws:s3:::tenant-data/blue/x", &[]), Decision::ImplicitDeny);
    assert_eq!(get(&admin(), "green/x"), Decision::Allow, "the administrator may do anything");

    // A session without the tag matches nothing (the variable is missing).
    let untagged = id.mint(&arn, "none", &[], 900, NOW).expect("mint");
    let q = id.principal(&untagged.access_key_id, Some(&untagged.session_token), NOW).expect("session");
    assert_eq!(get(&q, "blue/x"), Decision::ImplicitDeny);
    // Nor can a caller's extra context make it a principal tag.
    assert_eq!(
        id.authorize(&q, "s3:GetObject", "arn:aws:s3:::tenant-data/blue/x", &[("aws:PrincipalTag/TenantId", "blue")]),
        Decision::ImplicitDeny
    );
    // ... or add a second value to the real one.
    assert_eq!(
        id.authorize(&p, "s3:GetObject", "arn:aws:s3:::tenant-data/green/x", &[("aws:principaltag/tenantid", "green")]),
        Decision::ImplicitDeny
    );
}

#[test]
fn authorize_context_keys() {
    let (_dir, id) = setup();
    id.create_role(
        &NewRole {
            name: "ctx",
            trust_policy: TRUST_LAMBDA,
            tags: vec![("Tier".into(), "gold".into()), ("TenantId".into(), "role-default".into())],
            ..NewRole::default()
        },
        NOW,
    )
    .expect("create");
    id.put_role_policy(
        "ctx",
        "p",
        r#"{"Version":"2012-10-17","Statement":[
            {"Sid":"List","Effect":"Allow","Action":"s3:ListBucket","Resource":"arn:aws:s3:::tenant-data",
             "Condition":{"StringLike":{"s3:prefix":"${aws:PrincipalTag/TenantId}/*"}}},
            {"Sid":"Gold","Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::gold/*",
             "Condition":{"StringEquals":{"aws:PrincipalTag/Tier":"gold","aws:PrincipalArn":"arn:aws:iam::123456789012:role/ctx",
                          "aws:PrincipalType":"AssumedRole","aws:PrincipalAccount":"123456789012"}}},
            {"Sid":"Me","Effect":"Allow","Action":"s3:PutObject","Resource":"arn:aws:s3:::home/${aws:userid}/*"}]}"#,
    )
    .expect("put");
    let creds = id.mint(&role_arn("ctx"), "sess", &[("TenantId".into(), "blue".into())], 900, NOW).expect("mint");
    let p = id.principal(&creds.access_key_id, Some(&creds.session_token), NOW).expect("session");
    let list = |prefix: &str| id.authorize(&p, "s3:ListBucket", "arn:aws:s3:::tenant-data", &[("s3:prefix", prefix)]);
    assert_eq!(list("blue/reports/"), Decision::Allow, "the session tag overrides the role tag");
    assert_eq!(list("role-default/x"), Decision::ImplicitDeny);
    assert_eq!(id.authorize(&p, "s3:ListBucket", "arn:aws:s3:::tenant-data", &[]), Decision::ImplicitDeny, "no prefix");
    assert_eq!(
        id.authorize(&p, "s3:GetObject", "arn:aws:s3:::gold/x", &[]),
        Decision::Allow,
        "role tags are principal tags"
    );
    let role_id = &session(&p).role_id;
    assert_eq!(id.authorize(&p, "s3:PutObject", &format!("arn:aws:s3:::home/{role_id}:sess/f"), &[]), Decision::Allow);
}

#[test]
fn policy_changes_reach_the_cache_and_recreated_roles_are_new_roles() {
    let (_dir, id) = setup();
    create_role(&id, "r", TRUST_LAMBDA);
    id.put_role_policy("r", "p", TENANT_POLICY).expect("put");
    let creds = id.mint(&role_arn("r"), "s1", &[("TenantId".into(), "blue".into())], 900, NOW).expect("mint");
    let p = id.principal(&creds.access_key_id, Some(&creds.session_token), NOW).expect("session");
    let get = || id.authorize(&p, "s3:GetObject", "arn:aws:s3:::tenant-data/blue/x", &[]);
    assert_eq!(get(), Decision::Allow);
    id.delete_role_policy("r", "p").expect("delete");
    assert_eq!(get(), Decision::ImplicitDeny, "a deleted policy stops applying at once");
    id.put_role_policy("r", "p", TENANT_POLICY).expect("put");
    assert_eq!(get(), Decision::Allow);
    let deny = r#"{"Version":"2012-10-17","Statement":{"Effect":"Deny","Action":"s3:*","Resource":"*"}}"#;
    id.put_role_policy("r", "p", deny).expect("replace");
    assert_eq!(get(), Decision::ExplicitDeny, "a replaced policy applies at once");

    id.delete_role_policy("r", "p").expect("delete");
    id.delete_role("r").expect("delete role");
    assert_eq!(get(), Decision::ImplicitDeny);
    create_role(&id, "r", TRUST_LAMBDA);
    id.put_role_policy("r", "p", TENANT_POLICY).expect("put");
    assert_eq!(get(), Decision::ImplicitDeny, "old sessions do not gain the new role's permissions");
    let fresh = id.mint(&role_arn("r"), "s1", &[("TenantId".into(), "blue".into())], 900, NOW).expect("mint");
    let q = id.principal(&fresh.access_key_id, Some(&fresh.session_token), NOW).expect("session");
    assert_eq!(id.authorize(&q, "s3:GetObject", "arn:aws:s3:::tenant-data/blue/x", &[]), Decision::Allow);
}

#[test]
fn state_survives_a_restart_and_tokens_stay_valid() {
    let dir = TempDir::new().expect("temp dir");
    let creds = {
        let id = open(&dir);
        create_role(&id, "r", TRUST_LAMBDA);
        id.put_role_policy("r", "p", TENANT_POLICY).expect("put");
        id.mint(&role_arn("r"), "s1", &[("TenantId".into(), "blue".into())], 900, NOW).expect("mint")
    };
    let id = open(&dir);
    assert!(id.get_role("R").expect("read").is_some());
    let p = id.principal(&creds.access_key_id, Some(&creds.session_token), NOW).expect("still valid");
    assert_eq!(id.authorize(&p, "s3:GetObject", "arn:aws:s3:::tenant-data/blue/x", &[]), Decision::Allow);
}

#[test]
fn sessions_calling_iam_need_iam_permissions() {
    let (_dir, id) = setup();
    create_role(&id, "tenant", TRUST_LAMBDA);
    id.put_role_policy(
        "tenant",
        "self",
        r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":["iam:GetRole","iam:ListRolePolicies"],
            "Resource":"arn:aws:iam::123456789012:role/tenant"}}"#,
    )
    .expect("put");
    create_role(&id, "other", TRUST_LAMBDA);
    let creds = id.mint(&role_arn("tenant"), "t1", &[("TenantId".into(), "blue".into())], 900, NOW).expect("mint");
    let p = id.principal(&creds.access_key_id, Some(&creds.session_token), NOW).expect("session");

    let (status, doc) = call(
        &id,
        "iam",
        &p,
        &[("Action", "CreateRole"), ("RoleName", "evil"), ("AssumeRolePolicyDocument", TRUST_ACCOUNT_NO_TAGS)],
    );
    assert_eq!((status, error_code(&doc)), (403, "AccessDenied"));
    assert_eq!(
        doc.text("Error/Message"),
        "User: arn:aws:sts::123456789012:assumed-role/tenant/t1 is not authorized to perform: iam:CreateRole on \
         resource: arn:aws:iam::123456789012:role/evil because no identity-based policy allows the iam:CreateRole \
         action"
    );
    assert!(id.get_role("evil").expect("read").is_none());
    assert_eq!(call(&id, "iam", &p, &[("Action", "GetRole"), ("RoleName", "tenant")]).0, 200);
    assert_eq!(call(&id, "iam", &p, &[("Action", "ListRolePolicies"), ("RoleName", "tenant")]).0, 200);
    assert_eq!(call(&id, "iam", &p, &[("Action", "GetRole"), ("RoleName", "other")]).0, 403);
    // Authorisation comes first: a missing role is not revealed to a caller who may not look.
    assert_eq!(call(&id, "iam", &p, &[("Action", "GetRole"), ("RoleName", "ghost")]).0, 403);
    for action in ["DeleteRole", "ListRoles"] {
        assert_eq!(call(&id, "iam", &p, &[("Action", action), ("RoleName", "tenant")]).0, 403, "{action}");
    }
    let (status, _) = call(
        &id,
        "iam",
        &p,
        &[
            ("Action", "PutRolePolicy"),
            ("RoleName", "tenant"),
            ("PolicyName", "escalate"),
            ("PolicyDocument", TENANT_POLICY),
        ],
    );
    assert_eq!(status, 403);
}

#[test]
fn role_chaining_carries_transitive_tags() {
    let (_dir, id) = setup();
    // The first role may assume the second; the second trusts the first.
    create_role(&id, "first", TRUST_LAMBDA);
    id.put_role_policy(
        "first",
        "chain",
        r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":["sts:AssumeRole","sts:TagSession"],
            "Resource":"arn:aws:iam::123456789012:role/second"}}"#,
    )
    .expect("put");
    let trust_first = r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow",
        "Principal":{"AWS":"arn:aws:iam::123456789012:role/first"},"Action":["sts:AssumeRole","sts:TagSession"],
        "Condition":{"StringEquals":{"aws:PrincipalTag/TenantId":"blue"}}}}"#;
    create_role(&id, "second", trust_first);
    id.put_role_policy("second", "data", TENANT_POLICY).expect("put");
    create_role(&id, "third", trust_first); // trusted, but "first" may not assume it

    let creds = id.mint(&role_arn("first"), "env", &[("TenantId".into(), "blue".into())], 3600, NOW).expect("mint");
    let p = id.principal(&creds.access_key_id, Some(&creds.session_token), NOW).expect("session");
    let chain = |extra: &[(&str, &str)]| {
        let arn = role_arn("second");
        let mut pairs = vec![("RoleArn", arn.as_str()), ("RoleSessionName", "hop")];
        pairs.extend_from_slice(extra);
        assume(&id, &p, &pairs)
    };
    let (status, doc) = chain(&[("Tags.member.1.Key", "Step"), ("Tags.member.1.Value", "2")]);
    assert_eq!(status, 200);
    let q = principal_of(&id, &doc, NOW).expect("chained session");
    let s = session(&q);
    assert_eq!(s.tags, [("TenantId".to_owned(), "blue".to_owned()), ("Step".to_owned(), "2".to_owned())]);
    assert_eq!(s.transitive, ["TenantId"], "inherited tags stay transitive; Step was not marked");
    assert_eq!(id.authorize(&q, "s3:GetObject", "arn:aws:s3:::tenant-data/blue/x", &[]), Decision::Allow);
    assert_eq!(id.authorize(&q, "s3:GetObject", "arn:aws:s3:::tenant-data/green/x", &[]), Decision::ImplicitDeny);

    // An inherited tag cannot be replaced.
    let (status, doc) = chain(&[("Tags.member.1.Key", "tenantid"), ("Tags.member.1.Value", "green")]);
    assert_eq!((status, error_code(&doc)), (400, "ValidationError"));
    // Chained sessions last at most an hour.
    let (status, doc) = chain(&[("DurationSeconds", "3601")]);
    assert_eq!((status, error_code(&doc)), (400, "ValidationError"));
    // The caller's own policies must allow it too.
    let (status, doc) = assume(&id, &p, &[("RoleArn", &role_arn("third")), ("RoleSessionName", "hop")]);
    assert_eq!((status, error_code(&doc)), (403, "AccessDenied"));
    // And the trust policy's condition sees the caller's tags.
    let green = id.mint(&role_arn("first"), "env", &[("TenantId".into(), "green".into())], 3600, NOW).expect("mint");
    let g = id.principal(&green.access_key_id, Some(&green.session_token), NOW).expect("session");
    let (status, _) = assume(&id, &g, &[("RoleArn", &role_arn("second")), ("RoleSessionName", "hop")]);
    assert_eq!(status, 403);
}

#[test]
fn source_identity_needs_trust_and_sticks() {
    let (_dir, id) = setup();
    create_role(&id, "plain", TRUST_ACCOUNT_NO_TAGS);
    let trust = r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":{"AWS":"123456789012"},
        "Action":["sts:AssumeRole","sts:SetSourceIdentity"]}}"#;
    create_role(&id, "si", trust);
    let (status, _) = assume(
        &id,
        &admin(),
        &[("RoleArn", &role_arn("plain")), ("RoleSessionName", "s1"), ("SourceIdentity", "alice")],
    );
    assert_eq!(status, 403);
    let (status, doc) =
        assume(&id, &admin(), &[("RoleArn", &role_arn("si")), ("RoleSessionName", "s1"), ("SourceIdentity", "alice")]);
    assert_eq!(status, 200);
    assert_eq!(doc.text("AssumeRoleResult/SourceIdentity"), "alice");
    let p = principal_of(&id, &doc, NOW).expect("session");
    assert_eq!(session(&p).source_identity.as_deref(), Some("alice"));
}

#[test]
fn identity_is_shareable_across_threads() {
    fn shareable<T: Send + Sync>() {}
    shareable::<Identity>();
    shareable::<Principal>();
}

#[test]
fn identity_open_checks_the_account() {
    let dir = TempDir::new().expect("temp dir");
    assert!(Identity::open(dir.path().join("db"), [0; 32], "12345").is_err());
    assert!(Identity::open(dir.path().join("db"), [0; 32], "12345678901a").is_err());
    let id = Identity::open(dir.path().join("db"), [42; 32], ACCT).expect("open");
    assert!(!format!("{id:?}").contains("42, 42"), "the master key is not printed");
}
