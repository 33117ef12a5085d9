//! From text to checked statements: the limits, the pest grammar, syntax
//! errors in words, and the checks that need names (functions, methods,
//! service variables, assignment order).

use std::collections::{BTreeSet, HashSet};
use std::iter::Peekable;

use pest::Parser as _;
use pest::error::{Error as PestError, ErrorVariant, InputLocation};
use pest::iterators::{Pair, Pairs};

use super::ast::{
    Arity, BinOp, Expr, Func, Method, Metric, Role, Service, Statement, UnaryOp, constant,
};
use super::{DeallocationOption, FormulaError, MAX_FORMULA_BYTES, MAX_STATEMENTS, Value};

/// How deeply parentheses (calls included) and `?:` may nest. The parser
/// recurses once per level, so this bounds its stack use whatever the text.
const MAX_NESTING: usize = 32;

#[derive(pest_derive::Parser)]
#[grammar = "autoscale/formula.pest"]
struct FormulaParser;

/// A formula's checked statements.
pub(super) struct Parsed {
    pub statements: Vec<Statement>,
    pub reads_current_nodes: bool,
}

/// Parses and checks `text`.
pub(super) fn parse(text: &str) -> Result<Parsed, FormulaError> {
    check_size(text)?;
    check_statement_count(text)?;
    check_nesting(text)?;
    let mut formula =
        FormulaParser::parse(Rule::formula, text).map_err(|error| syntax_error(text, &error))?;
    let mut builder = Builder::default();
    let parts = child(&mut formula)?.into_inner();
    for pair in parts.filter(|p| p.as_rule() == Rule::statement) {
        builder.statement(pair)?;
    }
    if builder.statements.is_empty() {
        return Err(refuse((1, 1), "the formula has no statements"));
    }
    Ok(Parsed {
        statements: builder.statements,
        reads_current_nodes: builder.reads_current_nodes,
    })
}

/// The 1-based line and column (in characters) of a byte offset, as pest counts them.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    pest::Position::new(text, offset).map_or((1, 1), |p| p.line_col())
}

fn refuse((line, column): (usize, usize), message: impl Into<String>) -> FormulaError {
    FormulaError {
        line,
        column,
        message: message.into(),
    }
}

// ---------------------------------------------------------------------------
// Limits, checked on the raw text before parsing.

fn check_size(text: &str) -> Result<(), FormulaError> {
    if text.len() <= MAX_FORMULA_BYTES {
        return Ok(());
    }
    // Point at the first character that does not fit.
    let offset = text
        .char_indices()
        .find(|(i, c)| i + c.len_utf8() > MAX_FORMULA_BYTES)
        .map_or(0, |(i, _)| i);
    Err(refuse(
        line_col(text, offset),
        format!(
            "the formula is {} bytes long; the limit is {MAX_FORMULA_BYTES} bytes",
            text.len()
        ),
    ))
}

fn check_statement_count(text: &str) -> Result<(), FormulaError> {
    let mut count = 0;
    let mut in_statement = false;
    for (offset, c) in code_chars(text) {
        if c == ';' {
            in_statement = false;
        } else if !c.is_whitespace() && !in_statement {
            in_statement = true;
            count += 1;
            if count > MAX_STATEMENTS {
                return Err(refuse(
                    line_col(text, offset),
                    format!(
                        "the formula has more than {MAX_STATEMENTS} statements; the limit is {MAX_STATEMENTS}"
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn check_nesting(text: &str) -> Result<(), FormulaError> {
    // For the top level and each open parenthesis: the `?` seen in it since
    // its last `,`. The grammar recurses into every `?:` branch, so each one
    // counts as a level until its parenthesis, argument or statement ends.
    let mut questions: Vec<usize> = vec![0];
    for (offset, c) in code_chars(text) {
        match c {
            '(' => questions.push(0),
            ')' if questions.len() > 1 => {
                questions.pop();
            }
            ',' => questions.last_mut().into_iter().for_each(|q| *q = 0),
            '?' => questions.last_mut().into_iter().for_each(|q| *q += 1),
            ';' => questions = vec![0],
            _ => continue,
        }
        let depth = questions.len() - 1 + questions.iter().sum::<usize>();
        if depth > MAX_NESTING {
            return Err(refuse(
                line_col(text, offset),
                format!(
                    "the expression nests deeper than {MAX_NESTING} levels of parentheses and ?:"
                ),
            ));
        }
    }
    Ok(())
}

/// The characters of `text` outside comments and string contents, with
/// their byte offsets; a string shows as its opening quote.
fn code_chars(text: &str) -> impl Iterator<Item = (usize, char)> + '_ {
    let mut chars = text.char_indices().peekable();
    let mut in_string = false;
    std::iter::from_fn(move || {
        while let Some((offset, c)) = chars.next() {
            if in_string {
                // Strings end at their quote or, unterminated, at the line's end.
                in_string = c != '"' && c != '\n';
                continue;
            }
            match c {
                '"' => {
                    in_string = true;
                    return Some((offset, c));
                }
                '/' if chars.peek().is_some_and(|&(_, next)| next == '/') => {
                    while chars.next_if(|&(_, c)| c != '\n').is_some() {}
                }
                _ => return Some((offset, c)),
            }
        }
        None
    })
}

/// Where the innermost parenthesis still open at `offset` was opened.
fn unclosed_paren(text: &str, offset: usize) -> Option<usize> {
    let mut open = Vec::new();
    for (at, c) in code_chars(text).take_while(|&(at, _)| at < offset) {
        match c {
            '(' => open.push(at),
            ')' => {
                open.pop();
            }
            _ => {}
        }
    }
    open.pop()
}

// ---------------------------------------------------------------------------
// Syntax errors in words.

/// What may come where the parser stopped, in the order messages list it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Expected {
    Statement,
    Expression,
    Comma,
    Close,
    Colon,
    Separator,
    Assign,
    Open,
    MethodName,
    StringEnd,
    Operator,
}

impl Expected {
    fn of(rule: Rule) -> Option<Self> {
        use Rule as R;
        Some(match rule {
            // `formula` stands for what it tried first when nothing at all parsed.
            R::formula | R::target | R::statement => Self::Statement,
            R::expr
            | R::operand
            | R::unary_op
            | R::number
            | R::string
            | R::call
            | R::function_name
            | R::variable
            | R::paren => Self::Expression,
            R::comma => Self::Comma,
            R::close => Self::Close,
            R::colon => Self::Colon,
            R::sep | R::EOI => Self::Separator,
            R::assign => Self::Assign,
            R::open | R::args => Self::Open,
            R::method_name => Self::MethodName,
            R::string_end => Self::StringEnd,
            R::method | R::dot | R::infix_op | R::question => Self::Operator,
            R::primary | R::ident | R::string_text | R::WHITESPACE | R::COMMENT => {
                return None;
            }
        })
    }

    /// What may extend a complete operand, rather than be missing.
    fn is_continuation(self) -> bool {
        matches!(self, Self::Operator | Self::Open)
    }

    fn phrase(self, text: &str, offset: usize) -> String {
        match self {
            Self::Statement => r#"a statement ("variable = expression")"#.to_owned(),
            Self::Expression => {
                r#"an expression (a number, a variable, a function call or "(")"#.to_owned()
            }
            Self::Comma => r#"",""#.to_owned(),
            Self::Close => match unclosed_paren(text, offset) {
                Some(open) => {
                    let (line, column) = line_col(text, open);
                    format!(r#"")" to close the "(" at line {line}, column {column}"#)
                }
                None => r#"")""#.to_owned(),
            },
            Self::Colon => r#"":" and the value for false"#.to_owned(),
            Self::Separator => r#"";" between statements"#.to_owned(),
            Self::Assign => r#""=" after the variable name"#.to_owned(),
            Self::Open => r#""(" and the arguments"#.to_owned(),
            Self::MethodName => r#"a method name after ".""#.to_owned(),
            Self::StringEnd => r#"a closing '"' (strings end on their line)"#.to_owned(),
            Self::Operator => "an operator".to_owned(),
        }
    }
}

fn syntax_error(text: &str, error: &PestError<Rule>) -> FormulaError {
    let offset = match error.location {
        InputLocation::Pos(offset) | InputLocation::Span((offset, _)) => offset,
    };
    let positives: &[Rule] = match &error.variant {
        ErrorVariant::ParsingError { positives, .. } => positives,
        ErrorVariant::CustomError { .. } => &[],
    };
    let mut expected: BTreeSet<Expected> =
        positives.iter().filter_map(|&r| Expected::of(r)).collect();
    // An operator (or a call's "(") may follow any operand; saying so when
    // something else is missing only buries it.
    if expected.iter().any(|e| !e.is_continuation()) {
        expected.retain(|e| !e.is_continuation());
    }
    // Where a statement may start, a `;` may too: saying "a statement" is enough.
    if expected.contains(&Expected::Statement) {
        expected.remove(&Expected::Separator);
    }
    let found = text.get(offset..).and_then(|rest| rest.chars().next());
    let message = if expected == BTreeSet::from([Expected::Separator]) && found == Some(')') {
        r#"unmatched ")""#.to_owned()
    } else if expected.is_empty() {
        "unexpected input".to_owned()
    } else {
        let phrases: Vec<String> = expected.iter().map(|e| e.phrase(text, offset)).collect();
        format!("expected {}", phrases.join(" or "))
    };
    refuse(line_col(text, offset), message)
}

// ---------------------------------------------------------------------------
// From the parse tree to checked statements.

#[derive(Default)]
struct Builder {
    statements: Vec<Statement>,
    /// Variables assigned by the statements so far.
    assigned: HashSet<String>,
    reads_current_nodes: bool,
}

/// The next child of a node the grammar guarantees; an error instead of a
/// panic should the grammar and this code ever disagree.
fn child<'i>(pairs: &mut Pairs<'i, Rule>) -> Result<Pair<'i, Rule>, FormulaError> {
    pairs.next().ok_or_else(internal)
}

fn internal() -> FormulaError {
    refuse((1, 1), "internal error: unexpected parse tree")
}

fn unexpected(pair: &Pair<'_, Rule>) -> FormulaError {
    refuse(
        pair.line_col(),
        format!("internal error: unexpected {:?}", pair.as_rule()),
    )
}

fn names<T>(items: impl IntoIterator<Item = T>, name: impl Fn(T) -> &'static str) -> String {
    items.into_iter().map(name).collect::<Vec<_>>().join(", ")
}

impl Builder {
    fn statement(&mut self, pair: Pair<'_, Rule>) -> Result<(), FormulaError> {
        let mut inner = pair.into_inner();
        let target = child(&mut inner)?;
        let _assign = child(&mut inner)?;
        let value = child(&mut inner)?;
        let role = assignment_role(&target)?;
        let expr = match role {
            Role::Deallocation => self.deallocation(value)?,
            Role::User | Role::TargetNodes => self.expr(value)?,
        };
        let name = target.as_str().to_owned();
        self.assigned.insert(name.clone());
        self.statements.push(Statement {
            target: name,
            role,
            expr,
        });
        Ok(())
    }

    /// Builds what `$NodeDeallocationOption` is assigned, refusing a literal
    /// that is no option now rather than at every evaluation.
    fn deallocation(&mut self, value: Pair<'_, Rule>) -> Result<Expr, FormulaError> {
        let position = value.line_col();
        let word = value.as_str();
        let is_word = word.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        // A bare word that is no variable is meant as an option (as in
        // `= taskcompletion`): say which options exist, not that it is unassigned.
        let literal = if is_word && !self.assigned.contains(word) && constant(word).is_none() {
            word.to_owned()
        } else {
            match self.expr(value)? {
                Expr::Literal(Value::Text(text)) => text,
                expr => return Ok(expr),
            }
        };
        match DeallocationOption::from_name(&literal) {
            Some(_) => Ok(Expr::Literal(Value::Text(literal))),
            None => Err(refuse(
                position,
                format!(
                    "`{literal}` is not a node deallocation option; expected requeue, terminate or taskcompletion"
                ),
            )),
        }
    }

    fn expr(&mut self, pair: Pair<'_, Rule>) -> Result<Expr, FormulaError> {
        match pair.as_rule() {
            Rule::expr => self.operation(pair),
            Rule::operand => self.operand(pair),
            Rule::paren => {
                let mut inner = pair.into_inner();
                let _open = child(&mut inner)?;
                self.expr(child(&mut inner)?)
            }
            Rule::call => self.call(pair),
            Rule::variable => self.variable(pair),
            Rule::number => number(&pair),
            Rule::string => {
                let text = child(&mut pair.into_inner())?;
                Ok(Expr::Literal(Value::Text(text.as_str().to_owned())))
            }
            _ => Err(unexpected(&pair)),
        }
    }

    /// Operands joined by binary operators, then maybe `? then : otherwise`.
    fn operation(&mut self, pair: Pair<'_, Rule>) -> Result<Expr, FormulaError> {
        let mut operands = Vec::new();
        let mut ops = Vec::new();
        let mut inner = pair.into_inner();
        for part in inner.by_ref() {
            match part.as_rule() {
                Rule::operand => operands.push(self.expr(part)?),
                Rule::infix_op => {
                    ops.push(BinOp::from_symbol(part.as_str()).ok_or_else(|| unexpected(&part))?);
                }
                Rule::question => break,
                _ => return Err(unexpected(&part)),
            }
        }
        let cond = precedence(
            &mut operands.into_iter(),
            &mut ops.into_iter().peekable(),
            0,
        )?;
        let branches: Vec<Pair<'_, Rule>> = inner.filter(|p| p.as_rule() == Rule::expr).collect();
        let Ok([then, otherwise]) = <[Pair<'_, Rule>; 2]>::try_from(branches) else {
            return Ok(cond);
        };
        Ok(Expr::Ternary {
            cond: Box::new(cond),
            then: Box::new(self.expr(then)?),
            otherwise: Box::new(self.expr(otherwise)?),
        })
    }

    /// Prefix operators, a primary, and method calls (which bind tighter).
    fn operand(&mut self, pair: Pair<'_, Rule>) -> Result<Expr, FormulaError> {
        let mut ops = Vec::new();
        let mut inner = pair.into_inner().peekable();
        while let Some(op) = inner.next_if(|p| p.as_rule() == Rule::unary_op) {
            ops.push(UnaryOp::from_symbol(op.as_str()).ok_or_else(|| unexpected(&op))?);
        }
        let primary = inner.next().ok_or_else(internal)?;
        let operand = self.postfix(primary, inner)?;
        if ops.is_empty() {
            return Ok(operand);
        }
        Ok(Expr::Unary {
            ops,
            operand: Box::new(operand),
        })
    }

    /// A primary followed by method calls: only `$Metric.Method(args)`.
    fn postfix<'i>(
        &mut self,
        receiver: Pair<'i, Rule>,
        mut methods: impl Iterator<Item = Pair<'i, Rule>>,
    ) -> Result<Expr, FormulaError> {
        let Some(call) = methods.next() else {
            return self.expr(receiver);
        };
        let mut parts = call.into_inner();
        let _dot = child(&mut parts)?;
        let name = child(&mut parts)?;
        let args = child(&mut parts)?;
        let method = Method::from_name(name.as_str()).ok_or_else(|| {
            refuse(
                name.line_col(),
                format!(
                    "unknown method `{}`; the methods are {}",
                    name.as_str(),
                    names(Method::ALL, Method::name)
                ),
            )
        })?;
        let metric = match receiver.as_rule() {
            Rule::variable => Metric::from_name(receiver.as_str()),
            _ => None,
        }
        .ok_or_else(|| not_on_metric(&name))?;
        // A method's result is a value, not a metric: nothing can follow.
        if let Some(second) = methods.next() {
            let second_name = second.into_inner().nth(1).ok_or_else(internal)?;
            return Err(not_on_metric(&second_name));
        }
        let args = self.args(&name, method.name(), method.arity(), args)?;
        Ok(Expr::Sample {
            metric,
            method,
            args,
        })
    }

    fn call(&mut self, pair: Pair<'_, Rule>) -> Result<Expr, FormulaError> {
        let mut inner = pair.into_inner();
        let name = child(&mut inner)?;
        let func = Func::from_name(name.as_str()).ok_or_else(|| {
            refuse(
                name.line_col(),
                format!(
                    "unknown function `{}`; the functions are {}",
                    name.as_str(),
                    names(Func::ALL, Func::name)
                ),
            )
        })?;
        let args = self.args(&name, func.name(), func.arity(), child(&mut inner)?)?;
        Ok(Expr::Call { func, args })
    }

    /// Checks the number of arguments, then builds them.
    fn args(
        &mut self,
        name: &Pair<'_, Rule>,
        callee: &str,
        arity: Arity,
        args: Pair<'_, Rule>,
    ) -> Result<Vec<Expr>, FormulaError> {
        let exprs: Vec<Pair<'_, Rule>> = args
            .into_inner()
            .filter(|p| p.as_rule() == Rule::expr)
            .collect();
        if !arity.accepts(exprs.len()) {
            return Err(refuse(
                name.line_col(),
                format!("`{callee}` takes {}, got {}", arity.describe(), exprs.len()),
            ));
        }
        exprs.into_iter().map(|e| self.expr(e)).collect()
    }

    fn variable(&mut self, pair: Pair<'_, Rule>) -> Result<Expr, FormulaError> {
        let name = pair.as_str();
        if let Some(value) = constant(name) {
            return Ok(Expr::Literal(value));
        }
        match Service::from_name(name) {
            Some(Service::Metric(metric)) => Err(refuse(
                pair.line_col(),
                format!(
                    "{name} is a sample metric, not a value; call GetSample on it, e.g. {}.GetSample(1)",
                    metric.name()
                ),
            )),
            Some(Service::CurrentNodes) => {
                self.reads_current_nodes = true;
                Ok(Expr::Var(name.to_owned()))
            }
            Some(Service::TargetNodes) => Ok(Expr::Var(name.to_owned())),
            Some(Service::Deallocation) | None if self.assigned.contains(name) => {
                Ok(Expr::Var(name.to_owned()))
            }
            Some(Service::Deallocation) | None => Err(refuse(
                pair.line_col(),
                format!("`{name}` is used before it is assigned"),
            )),
        }
    }
}

/// Whether `target` may be assigned, and what assigning it means.
fn assignment_role(target: &Pair<'_, Rule>) -> Result<Role, FormulaError> {
    let name = target.as_str();
    match Service::from_name(name) {
        Some(Service::TargetNodes) => Ok(Role::TargetNodes),
        Some(Service::Deallocation) => Ok(Role::Deallocation),
        Some(Service::Metric(_) | Service::CurrentNodes) => Err(refuse(
            target.line_col(),
            format!(
                "{name} is read-only; only $TargetDedicatedNodes and $NodeDeallocationOption can be assigned"
            ),
        )),
        None if constant(name).is_some() => Err(refuse(
            target.line_col(),
            format!("`{name}` is a constant and cannot be assigned"),
        )),
        None => Ok(Role::User),
    }
}

/// Joins `operands` with `ops` from `level` up: one level's operators form
/// one flat chain whose operands are built at the levels above (recursion
/// is as deep as there are levels, however long the expression).
fn precedence(
    operands: &mut impl Iterator<Item = Expr>,
    ops: &mut Peekable<impl Iterator<Item = BinOp>>,
    level: u8,
) -> Result<Expr, FormulaError> {
    if level == BinOp::OPERAND_LEVEL {
        return operands.next().ok_or_else(internal);
    }
    let first = precedence(operands, ops, level + 1)?;
    let mut rest = Vec::new();
    while let Some(op) = ops.next_if(|op| op.level() == level) {
        rest.push((op, precedence(operands, ops, level + 1)?));
    }
    if rest.is_empty() {
        return Ok(first);
    }
    Ok(Expr::Chain {
        first: Box::new(first),
        rest,
    })
}

fn not_on_metric(method_name: &Pair<'_, Rule>) -> FormulaError {
    refuse(
        method_name.line_col(),
        format!(
            "`{}` can be called only on a sample metric: {}",
            method_name.as_str(),
            names(Metric::ALL, Metric::name)
        ),
    )
}

fn number(pair: &Pair<'_, Rule>) -> Result<Expr, FormulaError> {
    match pair.as_str().parse::<f64>() {
        Ok(x) if x.is_finite() => Ok(Expr::Literal(Value::Double(x))),
        _ => Err(refuse(pair.line_col(), "the number is too large")),
    }
}
