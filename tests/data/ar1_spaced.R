# nlme on Orthodont with occasions 10, 20, 30, 40 (issue 14 item 6): corAR1's default start
# phi = 0 is a stationary point there (the correlation one visit apart is phi^10), where nlme stops
# as jaxlmm did; started from phi = 0.9 (gls) / 0.7 (lme) it reaches the fit on occasions 1..4.
# Run: Rscript tests/data/ar1_spaced.R > tests/data/orthodont_ar1_spaced.json
suppressMessages({library(nlme); library(jsonlite)})
O <- read.csv("tests/data/Orthodont.csv")
O$Sex <- factor(O$Sex, levels = c("Male", "Female"))
O$occ10 <- O$occasion * 10
one <- function(fit) {
  list(logLik = as.numeric(logLik(fit)), REML = -2 * as.numeric(logLik(fit)),
       beta = unname(fixef_or_coef(fit)), sigma = fit$sigma,
       phi = unname(coef(fit$modelStruct$corStruct, unconstrained = FALSE)))
}
fixef_or_coef <- function(fit) if (inherits(fit, "lme")) fixef(fit) else coef(fit)
out <- list(nlme = as.character(packageVersion("nlme")))
out$gls_default_start <- one(gls(distance ~ age * Sex, correlation = corAR1(form = ~ occ10 | Subject), data = O))
out$gls <- one(gls(distance ~ age * Sex, correlation = corAR1(0.9, form = ~ occ10 | Subject), data = O))
out$lme_default_start <- one(lme(distance ~ age + Sex, random = ~ 1 | Subject,
                                 correlation = corAR1(form = ~ occ10 | Subject), data = O))
out$lme <- one(lme(distance ~ age + Sex, random = ~ 1 | Subject,
                   correlation = corAR1(0.7, form = ~ occ10 | Subject), data = O))
cat(toJSON(out, digits = NA, auto_unbox = TRUE, null = "null"))
