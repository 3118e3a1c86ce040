# Extra nlme results for tests/test_residual.py (normalised residuals, apVar, corExp, varPower,
# varExp). Run: Rscript tests/data/rside_extra.R > tests/data/orthodont_rside_extra.json
suppressMessages({library(nlme); library(jsonlite)})
O <- read.csv("tests/data/Orthodont.csv")
O$Sex <- factor(O$Sex, levels = c("Male", "Female"))
out <- list(nlme = as.character(packageVersion("nlme")))
one <- function(fit) {
  list(logLik = as.numeric(logLik(fit)), beta = unname(coef(summary(fit))[, 1]),
       se = unname(coef(summary(fit))[, 2]), sigma = fit$sigma,
       cor = if (is.null(fit$modelStruct$corStruct)) NULL else unname(coef(fit$modelStruct$corStruct, unconstrained = FALSE)),
       var = if (is.null(fit$modelStruct$varStruct)) NULL else unname(coef(fit$modelStruct$varStruct, unconstrained = FALSE)),
       apVar = unname(as.matrix(fit$apVar)), apVar_pars = unname(attr(fit$apVar, "Pars")),
       resid_pearson = unname(resid(fit, type = "pearson")),
       resid_normalized = unname(resid(fit, type = "normalized")),
       resid_response = unname(resid(fit, type = "response")))
}
out$gls_ar1 <- one(gls(distance ~ age * Sex, correlation = corAR1(form = ~ occasion | Subject), data = O))
out$lme_ar1 <- one(lme(distance ~ age + Sex, random = ~ 1 | Subject, correlation = corAR1(form = ~ occasion | Subject), data = O))
out$gls_exp <- one(gls(distance ~ age * Sex, correlation = corExp(form = ~ age | Subject), data = O))
out$gls_power <- one(gls(distance ~ age * Sex, weights = varPower(form = ~ age), data = O))
out$gls_varexp_ml <- one(gls(distance ~ age * Sex, weights = varExp(form = ~ age), data = O, method = "ML"))
cat(toJSON(out, digits = NA, auto_unbox = TRUE, null = "null"))
