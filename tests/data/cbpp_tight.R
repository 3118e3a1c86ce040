# lme4's cbpp fits with PIRLS run to convergence (tolPwrss = 1e-12): the converged optimum that
# the default tolerance (1e-7) only approximates. Writes cbpp_binomial_{laplace,agq10}_tight.json.
suppressMessages({library(lme4); library(jsonlite)})
one <- function(nagq, id) {
  t0 <- proc.time()[["elapsed"]]
  f <- glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), data = cbpp, family = binomial,
             nAGQ = nagq, control = glmerControl(tolPwrss = 1e-12))
  el <- proc.time()[["elapsed"]] - t0
  V <- as.matrix(vcov(f))
  re <- ranef(f)$herd
  list(id = id, kind = "glmer", engine = paste("lme4", packageVersion("lme4")),
       formula = "prop ~ period + (1 | herd)", data = "cbpp", family = "binomial", link = "logit",
       weights = "size", nAGQ = nagq, control = "glmerControl(tolPwrss = 1e-12)", nobs = nobs(f),
       theta = unname(getME(f, "theta")), beta = unname(fixef(f)), beta_names = names(fixef(f)),
       minus2loglik = -2 * as.numeric(logLik(f)), deviance = deviance(f),
       vcov = unname(V), se = unname(sqrt(diag(V))),
       hessian = unname(f@optinfo$derivs$Hessian),
       ranef = list(list(group = "herd", levels = rownames(re), columns = "(Intercept)",
                         values = unname(re[[1]]),
                         condsd = unname(sqrt(attr(ranef(f, condVar = TRUE)$herd, "postVar")[1, 1, ])))),
       r_seconds = el)
}
for (a in list(list(1, "cbpp_binomial_laplace_tight"), list(10, "cbpp_binomial_agq10_tight"))) {
  r <- one(a[[1]], a[[2]])
  writeLines(toJSON(r, digits = NA, auto_unbox = TRUE, pretty = TRUE), paste0(a[[2]], ".json"))
}
