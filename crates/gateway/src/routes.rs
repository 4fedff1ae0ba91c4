//! A deployment's resource tree, compiled for matching request paths: literal parts first,
//! then a `{param}`, then a greedy `{proxy+}`, as API Gateway chooses.

use std::collections::{BTreeMap, HashMap};

use crate::RouteMatch;

#[derive(Debug, Default)]
pub struct Node<M> {
    resource: Option<(String, String)>,
    literal: HashMap<String, Node<M>>,
    param: Option<(String, Box<Node<M>>)>,
    greedy: Option<(String, Box<Node<M>>)>,
    /// By HTTP method (`ANY` included).
    pub methods: HashMap<String, M>,
}

impl<M> Node<M> {
    pub fn new() -> Self {
        Node { resource: None, literal: HashMap::new(), param: None, greedy: None, methods: HashMap::new() }
    }

    /// Add a resource by its template path (`/orders/{id}`, `/{proxy+}`).
    pub fn insert(&mut self, template: &str, resource_id: &str, methods: HashMap<String, M>) {
        let mut node = self;
        for part in template.split('/').filter(|p| !p.is_empty()) {
            node = match part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                Some(name) if name.ends_with('+') => {
                    let name = name.trim_end_matches('+').to_string();
                    &mut node.greedy.get_or_insert_with(|| (name, Box::new(Node::new()))).1
                }
                Some(name) => &mut node.param.get_or_insert_with(|| (name.to_string(), Box::new(Node::new()))).1,
                None => node.literal.entry(part.to_string()).or_insert_with(Node::new),
            };
        }
        node.resource = Some((resource_id.to_string(), template.to_string()));
        node.methods = methods;
    }

    /// The resource a path matches, and its method (exact, else `ANY`).
    pub fn find(&self, path: &str, method: &str) -> Option<(RouteMatch, &M)> {
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        let mut params = BTreeMap::new();
        let node = self.walk(&parts, &mut params)?;
        let m = node.methods.get(method).or_else(|| node.methods.get("ANY"))?;
        let (id, template) = node.resource.as_ref()?;
        Some((RouteMatch { resource_id: id.clone(), resource_path: template.clone(), path_params: params }, m))
    }

    fn walk<'a>(&'a self, parts: &[&str], params: &mut BTreeMap<String, String>) -> Option<&'a Node<M>> {
        let Some((first, rest)) = parts.split_first() else {
            return self.resource.is_some().then_some(self);
        };
        if let Some(n) = self.literal.get(*first)
            && let Some(found) = n.walk(rest, params)
        {
            return Some(found);
        }
        if let Some((name, n)) = &self.param {
            params.insert(name.clone(), (*first).to_string());
            if let Some(found) = n.walk(rest, params) {
                return Some(found);
            }
            params.remove(name);
        }
        if let Some((name, n)) = &self.greedy
            && n.resource.is_some()
        {
            params.insert(name.clone(), parts.join("/"));
            return Some(n);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(m: &[&str]) -> HashMap<String, u32> {
        m.iter().enumerate().map(|(i, m)| (m.to_string(), i as u32)).collect()
    }

    #[test]
    fn literal_then_param_then_greedy() {
        let mut root: Node<u32> = Node::new();
        root.insert("/", "r0", ms(&["GET"]));
        root.insert("/orders", "r1", ms(&["GET", "POST"]));
        root.insert("/orders/{id}", "r2", ms(&["ANY"]));
        root.insert("/orders/latest", "r3", ms(&["GET"]));
        root.insert("/{proxy+}", "r4", ms(&["ANY"]));
        let (m, _) = root.find("/orders/42", "DELETE").expect("param");
        assert_eq!((m.resource_id.as_str(), m.path_params["id"].as_str()), ("r2", "42"));
        assert_eq!(root.find("/orders/latest", "GET").expect("literal").0.resource_id, "r3");
        // The literal has no POST, and a literal match wins over the parameter: no fallback.
        assert!(root.find("/orders/latest", "POST").is_none());
        let (m, _) = root.find("/a/b/c", "PUT").expect("greedy");
        assert_eq!((m.resource_id.as_str(), m.path_params["proxy"].as_str()), ("r4", "a/b/c"));
        assert_eq!(root.find("/", "GET").expect("root").0.resource_id, "r0");
        assert!(root.find("/", "POST").is_none());
        assert_eq!(root.find("/orders", "POST").expect("post").1, &1);
    }
}
